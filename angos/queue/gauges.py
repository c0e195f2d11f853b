"""Gauges a server publishes from shared state, one process at a time.

:func:`start_refresher` runs a ``refresh()`` function every ``interval``
seconds in each gunicorn worker, but only the holder of an exclusive
``flock`` on ``PROMETHEUS_MULTIPROC_DIR/angos-<name>.lock`` calls it; if that
worker dies the lock is released and another takes over on its next tick.
Gauges published this way use the ``livemostrecent`` multiprocess mode, so a
dead worker's values disappear with it. Two users:

- with ``[global.job_queue]``, ``angos_job_queue_pending`` /
  ``angos_job_queue_failed`` (the queue depth an autoscaler watches): every
  ``pending_refresh_interval_secs`` the server counts pending jobs ready within
  ``pending_ready_horizon_secs`` and dead-lettered jobs, both saturating at
  10000 so one refresh costs a bounded amount whatever the backlog. Without
  it (in-process drain) these two are not published, as the operator guide
  says (``api/jobs.py`` wires them);
- in every mode, the per-downstream replication gauges
  (:mod:`angos.replication.backlog`, :mod:`angos.replication.runs`), wired
  by ``create_app``;
- the blob store's size (:mod:`angos.storage_usage`), whose gauges keep the
  last count (``mostrecent``) rather than vanishing with their publisher.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
from typing import Callable

from ..outage import is_unreachable, outage

log = logging.getLogger("angos.queue.gauges")


class _Leader:
    def __init__(self, name: str):
        self.name = name
        self.fd = None

    def held(self) -> bool:
        if self.fd is not None:
            return True
        directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        if not directory:
            return True  # a single process: it is the leader
        fd = os.open(os.path.join(directory, f"angos-{self.name}.lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        self.fd = fd
        return True


def start_refresher(refresh: Callable[[], object], interval: float, name: str = "job-gauges") -> threading.Thread:
    """Call ``refresh()`` now and every ``interval`` seconds while this process leads ``name``, in a
    daemon thread (a greenlet under gevent); returns it."""
    leader = _Leader(name)

    label = name.replace("-", " ")
    # The backend's own address is in the error text; the outage makes it one line, not one per tick.
    down = outage(f"the backend of the {label}")

    def loop():
        while True:
            try:
                if leader.held():
                    refresh()
                    down.ok()
            except Exception as exc:  # noqa: BLE001 - a failed refresh keeps the last values; try again next tick
                if is_unreachable(exc):
                    down.failed(exc)
                else:
                    log.exception("refreshing the %s failed", label)
            stop.wait(interval)

    stop = threading.Event()
    t = threading.Thread(target=loop, name=f"angos-{name}", daemon=True)
    t.start()
    return t
