"""The server's in-process drain: one supervised consumer process per server.

Without ``[global.job_queue]`` the ``angos server`` process group drains both
queues itself. Running consumers inside the gunicorn workers would run one
pool per worker (and sqlite3 would block their gevent loops), so instead the
gunicorn master starts exactly one child, ``angos worker --in-process``, when
it is ready, and:

- restarts it (after a short pause) if it dies on its own;
- on server stop (marked as soon as the master gets SIGTERM, SIGINT or
  SIGQUIT, because systemd signals the child at the same moment), sends it SIGTERM (graceful: running jobs finish, bounded
  by ``drain_timeout_secs``) and waits, then SIGKILLs what is left, so no
  consumer outlives the server;
- the child also dies with its parent (``PR_SET_PDEATHSIG`` plus a parent
  check) if the master is killed outright.

The child inherits ``PROMETHEUS_MULTIPROC_DIR``, so metrics that job handlers
emit appear on the server's ``/metrics``; when it exits, its ``live*`` gauges
(``angos_replication_downstream_up``) are removed with it, as gunicorn's
``child_exit`` hook does for web workers. (With a process-local ``memory``
metadata lock the server starts no child: its single web worker drains, see
:func:`angos.queue.consumer.start_in_worker`.)
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time

log = logging.getLogger("angos.queue.drain")


class DrainSupervisor:
    """Start, watch, restart and stop the drain child from a thread of the gunicorn master.

    The child is started with ``os.posix_spawn``, not ``subprocess``: Popen waits
    on a pipe that gunicorn workers forked at the same moment would inherit,
    which would block this thread for as long as those workers live.
    """

    def __init__(self, argv: list[str], stop_timeout: float, env: dict | None = None):
        self.argv = argv
        self.stop_timeout = stop_timeout
        self.env = env
        self.pid: int | None = None
        self._stopping = threading.Event()
        self._exited = threading.Event()
        self._restarting = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._supervise, name="angos-drain-supervisor", daemon=True)
        self._thread.start()

    def _alive(self) -> bool:
        """Whether the child still runs; gunicorn's SIGCHLD handler may have reaped it already."""
        try:
            pid, _ = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:
            return False
        return pid == 0

    def _supervise(self) -> None:
        pause = 1.0
        env = dict(self.env if self.env is not None else os.environ)
        env["ANGOS_DRAIN_PARENT"] = str(os.getpid())
        try:
            while not self._stopping.is_set():
                started = time.monotonic()
                # Spawned from this thread, which lives as long as the child: PR_SET_PDEATHSIG
                # in the child fires when the spawning thread ends.
                self.pid = os.posix_spawn(self.argv[0], self.argv, env)
                log.info("in-process job drain started (pid %s)", self.pid)
                told = False
                while self._alive():
                    if self._stopping.is_set() and not told:
                        self._signal(signal.SIGTERM)  # stop() may have run before this child existed
                        told = True
                    time.sleep(0.2)
                pid, self.pid = self.pid, None  # reaped: never signal a recycled pid
                _forget_live_metrics(pid)
                if self._stopping.is_set():
                    return
                if self._restarting.is_set():
                    self._restarting.clear()
                    log.info("in-process job drain (pid %s) replaced to apply a configuration change", pid)
                    continue
                log.error("in-process job drain (pid %s) exited; restarting", pid)
                pause = 1.0 if time.monotonic() - started > 60 else min(pause * 2, 30.0)
                if self._stopping.wait(pause):
                    return
        finally:
            self._exited.set()

    def _signal(self, sig) -> None:
        pid = self.pid
        if pid is not None:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass

    def restart(self) -> None:
        """Replace the child (after a configuration change): it finishes its running jobs first."""
        self._restarting.set()
        self._signal(signal.SIGTERM)

    def stopping(self) -> None:
        """The server is stopping: the child's exit is expected and it is not restarted (the
        supervisor sends it SIGTERM if nothing else did). :meth:`stop` waits for it."""
        self._stopping.set()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is None:
            return
        self._signal(signal.SIGTERM)
        if not self._exited.wait(self.stop_timeout + 5):
            log.error("in-process job drain (pid %s) did not stop in time; killing it", self.pid)
            self._signal(signal.SIGKILL)
            self._exited.wait(5)
        log.info("in-process job drain stopped")


def _forget_live_metrics(pid: int) -> None:
    """Drop a dead drain's ``live*`` gauge files: what it said about downstreams no longer holds."""
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return
    try:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)
    except Exception:  # noqa: BLE001 - metrics housekeeping must never stop the supervisor
        log.warning("could not remove the metrics of drain pid %s", pid, exc_info=True)
