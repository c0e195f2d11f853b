"""The durable job queues (``replication``, ``cache`` and ``webhooks``) on Huey. SPEC section 10.

- :func:`make_huey` builds a queue's Huey instance (SQLite file under
  ``<metadata fs root>/_jobs/`` or Redis); :class:`JobQueue` wraps it with
  envelopes, coalescing by ``lock_key``, backoff, dead-letter, leases and
  the admin operations; :class:`JobQueues` holds every queue of a config.
- :mod:`.kinds` is where job kinds register their handlers; the queue never
  imports the packages that define them.
- :mod:`.consumer` drains queues in a process (``angos worker``, and the
  server's in-process drain supervised by :mod:`.drain`); :mod:`.gauges`
  publishes the queue-depth gauges from the server.

Producers: ``app.extensions["angos.queues"].enqueue("replication", kind,
lock_key, payload)`` returns True for a new job, False for a coalesced
duplicate or a (logged, counted) failure, and never raises.
"""

import importlib

# Names resolve lazily (PEP 562): importing angos.queue.drain or .layout in the gunicorn
# master must not pull in Huey and redis before the gevent workers patch the process.
_EXPORTS = {
    "JobQueue": "core", "JobQueues": "core", "make_huey": "core", "jobs_dir": "layout", "queue_db": "layout",
    "Envelope": "envelope", "QUEUES": "envelope", "STORAGE_KEY": "envelope", "backoff_secs": "envelope",
    "JobContext": "kinds", "RetryableJobError": "kinds", "TerminalJobError": "kinds", "job_kind": "kinds",
    "register": "kinds",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
