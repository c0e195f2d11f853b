"""Where the job queues keep their state. Light on purpose: the gunicorn master imports it
(Huey, redis and boto3 must not be imported there before the gevent workers patch the process).

- :func:`jobs_dir`: ``<metadata fs root>/_jobs``. An S3 metadata store has no local root;
  its local queue files then live in ``$ANGOS_JOBS_DIR`` (default ``./_jobs``).
- :func:`queue_db`: ``<jobs dir>/pending/<queue>/queue.db``, the directory the operator
  guide names for pending jobs. With a filesystem metadata store the one database holds
  the queue's pending, running and dead-lettered jobs and Huey's wake-up tables.
- :func:`jobs_on_s3`: an S3 metadata store without ``[global.job_queue]`` (the server's
  in-process drain). The jobs then live in the metadata bucket under its key prefix +
  ``_jobs/`` (:mod:`angos.queue.s3_store`, which documents the layout), and ``queue_db``
  in ``$ANGOS_JOBS_DIR`` holds only Huey's wake-ups, shared by the box's processes and
  rebuilt from S3 when lost.
"""

from __future__ import annotations

import os


def jobs_dir(cfg) -> str:
    if cfg.metadata.fs is not None:
        return os.path.join(cfg.metadata.fs.root_dir, "_jobs")
    return os.path.abspath(os.environ.get("ANGOS_JOBS_DIR", "_jobs"))


def jobs_on_s3(cfg) -> bool:
    return cfg.global_.job_queue is None and cfg.metadata.s3 is not None


def queue_db(cfg, queue: str) -> str:
    return os.path.join(jobs_dir(cfg), "pending", queue, "queue.db")
