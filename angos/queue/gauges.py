"""Refresh ``angos_job_queue_pending`` / ``angos_job_queue_failed`` from the server.

With ``[global.job_queue]`` the server publishes the queue depth (the gauge an
autoscaler watches); every ``pending_refresh_interval_secs`` it counts pending
jobs ready within ``pending_ready_horizon_secs`` and dead-lettered jobs, both
saturating at 10000 so one refresh costs a bounded amount whatever the
backlog. Without it (in-process drain) no gauge is published, as the operator
guide says.

Only one gunicorn worker refreshes at a time: each worker runs the loop, but
only the holder of an exclusive ``flock`` on a file in
``PROMETHEUS_MULTIPROC_DIR`` counts; if it dies the lock is released and
another worker takes over on its next tick. The gauges use the
``livemostrecent`` multiprocess mode, so a dead worker's value disappears.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading

log = logging.getLogger("angos.queue.gauges")


class _Leader:
    def __init__(self):
        self.fd = None

    def held(self) -> bool:
        if self.fd is not None:
            return True
        directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        if not directory:
            return True  # a single process: it is the leader
        fd = os.open(os.path.join(directory, "angos-job-gauges.lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        self.fd = fd
        return True


def start_refresher(queues, interval: float) -> threading.Thread:
    """Run the refresh loop in a daemon thread (a greenlet under gevent); returns it."""
    leader = _Leader()

    def loop():
        while True:
            try:
                if leader.held():
                    for name in ("replication", "cache"):
                        queues[name].refresh_gauges()
            except Exception:  # noqa: BLE001 - a failed refresh keeps the last values; try again next tick
                log.exception("refreshing job queue gauges failed")
            stop.wait(interval)

    stop = threading.Event()
    t = threading.Thread(target=loop, name="angos-job-gauges", daemon=True)
    t.start()
    return t
