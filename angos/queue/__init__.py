"""The durable job queues (``replication`` and ``cache``) on Huey. SPEC section 10.

- :func:`make_huey` builds a queue's Huey instance (SQLite file under
  ``<metadata fs root>/_jobs/`` or Redis); :class:`JobQueue` wraps it with
  envelopes, coalescing by ``lock_key``, backoff, dead-letter, leases and
  the admin operations; :class:`JobQueues` holds both queues of a config.
- :mod:`.kinds` is where job kinds register their handlers; the queue never
  imports the packages that define them.
- :mod:`.consumer` drains queues in a process (``angos worker``, and the
  server's in-process drain supervised by :mod:`.drain`); :mod:`.gauges`
  publishes the queue-depth gauges from the server.

Producers: ``app.extensions["angos.queues"].enqueue("replication", kind,
lock_key, payload)`` returns True for a new job, False for a coalesced
duplicate or a (logged, counted) failure, and never raises.
"""

from .core import JobQueue, JobQueues, jobs_dir, make_huey
from .envelope import QUEUES, STORAGE_KEY, Envelope, backoff_secs
from .kinds import JobContext, RetryableJobError, TerminalJobError, job_kind, register

__all__ = ["JobQueue", "JobQueues", "make_huey", "jobs_dir", "Envelope", "QUEUES", "STORAGE_KEY", "backoff_secs",
           "JobContext", "RetryableJobError", "TerminalJobError", "job_kind", "register"]
