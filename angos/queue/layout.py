"""Where the SQLite queues live on disk. Light on purpose: the gunicorn master imports it
(Huey and redis must not be imported there before the gevent workers patch the process).

- :func:`jobs_dir`: ``<metadata fs root>/_jobs``. An S3 metadata store has no local root;
  without a Redis queue the server's in-process drain then keeps its files in
  ``$ANGOS_JOBS_DIR`` (default ``./_jobs``), which is logged at start-up.
- :func:`queue_db`: ``<jobs dir>/pending/<queue>/queue.db``, the directory the operator
  guide names for pending jobs; the one database holds the queue's pending, running and
  dead-lettered jobs (and Huey's wake-up tables).
"""

from __future__ import annotations

import os


def jobs_dir(cfg) -> str:
    if cfg.metadata.fs is not None:
        return os.path.join(cfg.metadata.fs.root_dir, "_jobs")
    return os.path.abspath(os.environ.get("ANGOS_JOBS_DIR", "_jobs"))


def queue_db(cfg, queue: str) -> str:
    return os.path.join(jobs_dir(cfg), "pending", queue, "queue.db")
