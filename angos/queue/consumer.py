"""Drain queues in this process: one Huey consumer (thread pool) per queue.

Used by ``angos worker`` and by the server's in-process drain. Contract:

- each queue gets its own pool of ``max_concurrent_<queue>_jobs`` threads and
  its own scheduler; the scheduler and the idle poll run every
  ``poll_interval`` (Huey's default backs off to 10 s when idle, which would put
  seconds between an enqueue and its start). Redis queues pop blocking, so a
  job starts as soon as it is pushed;
- a housekeeping thread renews the leases of running jobs, reclaims jobs of
  dead workers (at start-up too, so a restart after ``kill -9`` picks up what
  was running) and re-issues wake-ups lost in a crash;
- SIGTERM and SIGINT are graceful: no new job starts, running ones get up to
  ``job_queue.drain_timeout_secs`` to finish, then the process returns 0. A
  job cut off by the timeout (or by ``kill -9``) keeps its running record and
  runs again when a worker reclaims it. Repeated signals change nothing
  (SIGKILL is the way to stop at once).
- ``parent_pid``: exit gracefully when that process goes away (the server's
  in-process drain must never outlive its server);
- the configuration files are re-read when they change; jobs that start
  afterwards see the new configuration (an invalid file is logged, ignored).

:func:`start_in_worker` is the variant for a gevent web worker (greenlet
pools, the worker's own signal handling, graceful stop at process exit).
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import threading
import time

from huey.consumer import Consumer, Scheduler, Worker

from .. import sdnotify
from ..logs import use_format
from ..outage import is_unreachable
from ..outage import outage as _outage
from ..reload import file_state
from .core import JobQueue, queue_config
from .envelope import QUEUES
from .kinds import load_job_modules, registered_kinds, run_drain_hooks

log = logging.getLogger("angos.queue.consumer")

HOUSEKEEPING_SECS = 2.0


class _FastScheduler(Scheduler):
    """Huey's scheduler clamps its tick to >= 1 s; retries back off from 100 ms, so tick at the poll interval.

    A backend outage is reported to the queue's :class:`angos.outage.Outage` (one line, not a
    traceback per tick) and the next tick waits for its backoff."""

    def __init__(self, huey, stop_flag, interval, periodic, outage):
        super().__init__(huey, stop_flag, 1, periodic)
        self.interval = interval
        self.outage = outage

    def loop(self, now=None):
        current = self._next_loop
        self._next_loop += self.interval
        if self._next_loop < time.monotonic():
            self._next_loop = time.monotonic()  # fell behind (e.g. a suspend): skip a tick, as Huey does
            return
        try:
            tasks = self.huey.read_schedule(now)
        except Exception as exc:  # noqa: BLE001 - the scheduler must outlive any backend failure
            if is_unreachable(exc):
                self.stop_flag.wait(self.outage.failed(exc))
                self._next_loop = time.monotonic()
                return
            self._logger.exception("Error reading schedule.")
            tasks = []
        else:
            self.outage.ok()
        for task in tasks:
            try:
                self.huey.enqueue(task)
            except Exception as exc:  # noqa: BLE001 - as Huey: report it and go on with the others
                if is_unreachable(exc):
                    self.outage.failed(exc)
                else:
                    self._logger.exception("Error enqueueing %s.", task)
        self.sleep_for_interval(current, self.interval)


class _Worker(Worker):
    """Huey's worker loop (angos sets no ``max_tasks``), with a backend outage reported once to
    the queue's :class:`angos.outage.Outage` instead of a traceback per poll, and waited out
    with its backoff. Other errors are logged as Huey does."""

    def __init__(self, *args, outage, **kwargs):
        super().__init__(*args, **kwargs)
        self.outage = outage

    def loop(self, now=None):
        try:
            task = self.huey.dequeue()
        except Exception as exc:  # noqa: BLE001 - the worker must outlive any backend failure
            if is_unreachable(exc):
                self.stop_flag.wait(self.outage.failed(exc))
            else:
                self._logger.exception("Error reading from queue")
                self.sleep()
            return
        self.outage.ok()
        if task is None:
            if not self.huey.storage.blocking:
                self.sleep()
            return
        self.delay = self.default_delay
        try:
            self.huey.execute(task, now)
        except Exception:  # noqa: BLE001 - as Huey: one task's failure never stops the worker
            self._logger.exception("Unhandled error during execution of task %s.", task.id)


class AngosConsumer(Consumer):
    def __init__(self, huey, workers: int, poll_interval: float, shutdown_timeout: float,
                 worker_type: str = "thread", outage=None):
        self._poll = poll_interval
        self._outage = outage or _outage("the job queue backend")
        # Huey's worker sleeps only when a poll finds nothing (SQLite) or the queue errors (both).
        # SQLite: a fixed short poll. Redis pops block, so sleeping means Redis is failing: back off.
        blocking = getattr(huey.storage, "blocking", False)
        super().__init__(huey, workers=workers, periodic=False, initial_delay=poll_interval,
                         backoff=2.0 if blocking else 1.0, max_delay=10.0 if blocking else poll_interval,
                         worker_type=worker_type, check_worker_health=True,
                         shutdown_timeout=shutdown_timeout, graceful_signal="TERM")

    def _create_scheduler(self):
        return _FastScheduler(huey=self.huey, stop_flag=self.stop_flag, interval=self._poll, periodic=False,
                              outage=self._outage)

    def _create_worker(self):
        return _Worker(huey=self.huey, stop_flag=self.stop_flag, default_delay=self.default_delay,
                       max_delay=self.max_delay, backoff=self.backoff, outage=self._outage)

    def _set_signal_handlers(self):
        """Signals belong to the process hosting the consumers (several per process, or a web worker)."""


def pool_size(cfg, queue: str) -> int:
    g = cfg.global_
    return {"replication": g.max_concurrent_replication_jobs,
            "webhooks": g.max_concurrent_webhook_jobs}.get(queue, g.max_concurrent_cache_jobs)


def _die_with_parent() -> None:
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass  # not Linux: the parent check in the main loop still applies


def _quiet_huey() -> None:
    if logging.getLogger("huey").level == logging.NOTSET:
        logging.getLogger("huey").setLevel(logging.WARNING)  # Huey logs every message at INFO


def _housekeep(jqs, stopping) -> None:
    """One pass (every second): renew leases every lease/3; every HOUSEKEEPING_SECS reclaim the jobs of
    dead owners and re-issue lost wake-ups."""
    for q in jqs:
        try:
            if time.monotonic() - getattr(q, "_renewed", 0.0) >= q.lease_secs / 3:
                q.heartbeat()
                q._renewed = time.monotonic()
                q.outage.ok()
            if not stopping and time.monotonic() - getattr(q, "_housekept", 0.0) >= HOUSEKEEPING_SECS:
                q._housekept = time.monotonic()
                q.reclaim()
                q.top_up()
                q.outage.ok()
        except Exception as exc:  # noqa: BLE001 - keep the lease loop alive through backend hiccups
            if is_unreachable(exc):
                q.outage.failed(exc)  # one line per outage; the next pass tries again
            else:
                log.exception("job queue housekeeping failed for %s", q.name)


def start_in_worker(cfg, queues, job_modules=(), poll_interval: float = 0.05) -> None:
    """Host the drain inside this (single, gevent) web worker: greenlet pools, no signal handlers.

    Used when the metadata lock is process-local (``memory``, which the config only allows with
    one server worker): a separate drain process would write metadata that lock cannot guard.
    The worker's exit (gunicorn's graceful stop) lets running jobs finish, bounded by the drain
    timeout and the server's own ``shutdown_drain_secs``.
    """
    import atexit

    import gevent

    _quiet_huey()
    load_job_modules(job_modules)
    timeout = float(min(queue_config(cfg).drain_timeout_secs, max(cfg.server.shutdown_drain_secs - 1, 1)))
    jqs = [queues[name] for name in QUEUES]
    consumers = [AngosConsumer(q.huey, pool_size(cfg, q.name), poll_interval, timeout, worker_type="greenlet",
                               outage=q.outage) for q in jqs]
    for c in consumers:
        c.start()  # AngosConsumer leaves the web worker's signal handlers alone
    for q in jqs:
        run_drain_hooks(q.name, q.context)
    stopping = []

    def housekeeping():
        while not stopping:
            _housekeep(jqs, False)
            gevent.sleep(1.0)

    keeper = gevent.spawn(housekeeping)

    def stop():
        stopping.append(True)
        gevent.joinall([gevent.spawn(c.stop, graceful=True) for c in consumers])
        keeper.kill()

    atexit.register(stop)
    log.info("draining replication, cache, webhooks inside the web worker (pid %s; process-local metadata lock)",
             os.getpid())


class _ConfigWatcher:
    """Reload the configuration files when they change (SPEC 3): a valid new config applies to the
    next job; an invalid one is logged and the old one kept. Queue storage, pool sizes and the
    presence of [global.job_queue] only change with a restart."""

    def __init__(self, paths, cfg, stamp=None):
        self.paths = list(paths or ())
        self.cfg = cfg
        # The fingerprint of the files as they were when ``cfg`` was read: taking it later
        # would fold an edit made in between into the baseline and never apply it.
        self.stamp = stamp if stamp is not None else file_state(self.paths)

    def poll(self):
        stamp = file_state(self.paths)
        if stamp == self.stamp:
            return None
        self.stamp = stamp
        from ..config import load_config
        from ..oci.errors import AngosError

        try:
            new = load_config(self.paths)
        except AngosError as exc:
            log.error("configuration reload failed, keeping the previous one: %s", exc)
            return None
        old = queue_config(self.cfg), self.cfg.global_.job_queue is None
        if (queue_config(new).backend, queue_config(new).url, new.global_.job_queue is None) != (
                old[0].backend, old[0].url, old[1]):
            log.warning("the job queue backend changed in the configuration; restart the worker to use it")
        self.cfg = new
        use_format(new.global_.log_format)
        log.info("configuration reloaded")
        return new


def run_consumers(cfg, queues, poll_interval: float, job_modules=(), parent_pid: int | None = None,
                  config_paths=(), config_stamp=None) -> int:
    """Drain ``queues`` until SIGTERM/SIGINT (or the parent server exits). ``config_stamp`` is
    :func:`angos.reload.file_state` of ``config_paths`` taken before ``cfg`` was loaded."""
    if parent_pid is not None:
        _die_with_parent()
    _quiet_huey()
    load_job_modules(job_modules)
    timeout = float(queue_config(cfg).drain_timeout_secs)
    # The server's drain (parent_pid set) never creates a missing data root; the server's workers do.
    jqs = [JobQueue(cfg, name, poll_interval=poll_interval, create_root=parent_pid is None) for name in queues]
    consumers = [AngosConsumer(q.huey, pool_size(cfg, q.name), poll_interval, timeout, outage=q.outage)
                 for q in jqs]

    stop = threading.Event()

    def on_signal(signum, frame):
        # Idempotent: systemd signals every process of the unit and the server signals its
        # drain too, so a repeated SIGTERM must not turn a graceful stop into an abrupt one.
        if not stop.is_set():
            log.info("received %s: finishing running jobs (up to %ss)", signal.Signals(signum).name, timeout)
            if parent_pid is None:
                sdnotify.notify("STOPPING=1")
        stop.set()

    housekeeping_stop = threading.Event()

    def housekeeping():
        while True:
            _housekeep(jqs, stop.is_set())
            if housekeeping_stop.wait(1.0):
                return

    # Installed before any job can start, so a stop requested at any point is seen.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    if hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
    for c in consumers:
        c.start()
    for q in jqs:
        run_drain_hooks(q.name, q.context)
    keeper = threading.Thread(target=housekeeping, name="angos-queue-housekeeping", daemon=True)
    keeper.start()
    log.info("draining %s (pools: %s; poll %.3fs; job kinds: %s)", ", ".join(queues),
             ", ".join(f"{q.name}={pool_size(cfg, q.name)}" for q in jqs), poll_interval,
             ", ".join(registered_kinds()) or "none")
    if parent_pid is None:
        # `angos worker` under a Type=notify unit. The server's drain (parent_pid set) stays
        # quiet: systemd accepts notifications from the unit's main process only.
        sdnotify.notify("READY=1", f"STATUS=draining {', '.join(queues)}")

    health_at = time.monotonic()
    watcher = _ConfigWatcher(config_paths, cfg, config_stamp)
    while not stop.wait(0.5):
        new = watcher.poll()
        if new is not None:
            for q in jqs:
                q.apply_config(new)
        if parent_pid is not None and os.getppid() != parent_pid:
            log.info("the server (pid %s) is gone; stopping", parent_pid)
            stop.set()
            break
        if time.monotonic() - health_at >= 10:
            health_at = time.monotonic()
            for c in consumers:
                c.check_worker_health()

    stoppers = [threading.Thread(target=c.stop, kwargs={"graceful": True}) for c in consumers]
    for t in stoppers:
        t.start()
    for t in stoppers:
        t.join()
    busy = [w for c in consumers for _, w in c.worker_threads if w.is_alive()]
    housekeeping_stop.set()
    keeper.join(5)
    if busy:
        log.warning("drain timeout (%ss) elapsed with %d job(s) still running; they will run again", timeout,
                    len(busy))
    for q in jqs:
        q.close()
    log.info("stopped")
    return 0
