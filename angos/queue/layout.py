"""Where the job queues keep their state. Light on purpose: the gunicorn master imports it
(Huey, redis and boto3 must not be imported there before the gevent workers patch the process).

- :func:`jobs_dir`: ``<metadata fs root>/_jobs``. An S3 metadata store has no local root;
  its local queue files then live in ``$ANGOS_JOBS_DIR`` when set, else in
  ``$STATE_DIRECTORY/_jobs`` (systemd sets it from the unit's ``StateDirectory=``, the one
  writable place under ``ProtectSystem=strict``), else ``<blob fs root>/_jobs`` when blobs
  are on a filesystem, else ``./_jobs``. The working directory comes last because a
  service's is ``/``, read-only in the shipped units.
- :func:`make_jobs_dir`: create it, or fail start-up with one line saying how to choose it.
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
    explicit = os.environ.get("ANGOS_JOBS_DIR")
    if explicit:
        return os.path.abspath(explicit)
    state = os.environ.get("STATE_DIRECTORY")  # several StateDirectory= entries arrive colon-separated
    if state:
        return os.path.join(state.split(":")[0], "_jobs")
    if cfg.blob_store.fs is not None:
        return os.path.join(cfg.blob_store.fs.root_dir, "_jobs")
    return os.path.abspath("_jobs")


def make_jobs_dir(cfg) -> str:
    """Create :func:`jobs_dir` (the server does, before its drain starts); one clear line if it cannot."""
    path = jobs_dir(cfg)
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as exc:
        from ..oci.errors import AngosError

        raise AngosError(f"cannot create the job queue's local directory {path} ({exc.strerror}); set "
                         "ANGOS_JOBS_DIR to a writable directory (with an S3 metadata store it holds only "
                         "this box's wake-ups)") from None
    return path


def jobs_on_s3(cfg) -> bool:
    return cfg.global_.job_queue is None and cfg.metadata.s3 is not None


def queue_db(cfg, queue: str) -> str:
    return os.path.join(jobs_dir(cfg), "pending", queue, "queue.db")
