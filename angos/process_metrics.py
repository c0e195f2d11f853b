"""Process and Python runtime metrics for a server made of several processes.

prometheus_client's ``ProcessCollector`` describes the process that answers the
scrape, and its GC collector switches itself off in multiprocess mode, so under
gunicorn ``/metrics`` would show one worker's memory, picked at random. Here
every process sharing ``PROMETHEUS_MULTIPROC_DIR`` (each gunicorn worker, and
the in-process job drain) publishes its own values as multiprocess series
(declared in :mod:`angos.metrics`) every :data:`INTERVAL` seconds, and the
worker answering a scrape does so just before it answers. ``/metrics`` then
reads:

- ``process_resident_memory_bytes``, ``process_virtual_memory_bytes``,
  ``process_open_fds``: the sum over the live processes (``livesum``: a worker
  that exits takes its share with it);
- ``process_max_fds``: the lowest per-process limit (a sum of limits means
  nothing; each process can hit its own);
- ``process_start_time_seconds``: the earliest start (``min``), which is the
  server's start to within the time it takes to fork a worker;
- ``process_cpu_seconds_total``: a counter every process advances by the CPU
  time it used since its previous update; what exited workers used stays in
  it, so it never goes back and ``rate()`` is the server's CPU use;
- ``python_gc_objects_collected_total``, ``python_gc_objects_uncollectable_total``,
  ``python_gc_collections_total`` (by ``generation``): counters advanced the same way;
- ``python_info``: 1, labelled with the interpreter's version.

Not counted: the gunicorn master, a few MiB that sits in a loop. The cost is
one read of ``/proc/self/stat``, one listing of ``/proc/self/fd`` and
``gc.get_stats()`` per process every :data:`INTERVAL` seconds.

Without ``PROMETHEUS_MULTIPROC_DIR`` (a standalone ``angos worker
--metrics-address``) nothing here runs: prometheus_client's own collectors
describe that one process.
"""

from __future__ import annotations

import gc
import logging
import os
import threading

from . import metrics as m

log = logging.getLogger("angos.process_metrics")

INTERVAL = 5.0

_lock = threading.Lock()
_published: dict = {}  # what this process has added to its counters so far
_started = False


def _readings() -> dict:
    from prometheus_client import PlatformCollector, ProcessCollector

    out = {}
    for family in ProcessCollector(registry=None).collect():
        for sample in family.samples:
            out[sample.name] = sample.value
    for family in PlatformCollector(registry=None).collect():
        for sample in family.samples:
            if sample.name == "python_info":
                out["python_info"] = sample.labels
    return out


def _advance(counter, key, total: float) -> None:
    """Add what ``total`` grew by since this process last published it."""
    delta = total - _published.get(key, 0.0)
    if delta > 0:
        counter.inc(delta)
        _published[key] = total


def update() -> None:
    """Publish this process's current values (cheap; safe to call from any thread)."""
    with _lock:
        r = _readings()
        if "process_resident_memory_bytes" in r:  # no /proc: nothing to say about memory
            m.PROCESS_RESIDENT_MEMORY.set(r["process_resident_memory_bytes"])
            m.PROCESS_VIRTUAL_MEMORY.set(r["process_virtual_memory_bytes"])
            m.PROCESS_START_TIME.set(r["process_start_time_seconds"])
            _advance(m.PROCESS_CPU, "cpu", r["process_cpu_seconds_total"])
        if "process_open_fds" in r:
            m.PROCESS_OPEN_FDS.set(r["process_open_fds"])
            m.PROCESS_MAX_FDS.set(r["process_max_fds"])
        if "python_info" in r:
            m.PYTHON_INFO.labels(**r["python_info"]).set(1)
        for generation, stats in enumerate(gc.get_stats()):
            g = str(generation)
            _advance(m.PYTHON_GC_COLLECTED.labels(g), ("collected", g), stats["collected"])
            _advance(m.PYTHON_GC_UNCOLLECTABLE.labels(g), ("uncollectable", g), stats["uncollectable"])
            _advance(m.PYTHON_GC_COLLECTIONS.labels(g), ("collections", g), stats["collections"])


def start() -> None:
    """Publish now and every :data:`INTERVAL` seconds from a daemon thread (a greenlet under
    gevent); once per process, and only in multiprocess mode."""
    global _started
    if _started or not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return
    _started = True
    update()
    stop = threading.Event()

    def loop():
        while not stop.wait(INTERVAL):
            try:
                update()
            except Exception:  # noqa: BLE001 - keep the last values; try again next time
                log.exception("publishing process metrics failed")

    threading.Thread(target=loop, name="angos-process-metrics", daemon=True).start()
