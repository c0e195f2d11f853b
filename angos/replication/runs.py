"""The record of the last ``angos replicate`` runs, so the server can show them on ``/metrics``.

``angos replicate`` (``scrub --replicate``) is a short-lived process: counters it keeps in
its own memory are gone before Prometheus could scrape them. So at the end of every run
that is not a ``--dry-run`` it updates one small JSON object on the metadata store
(:func:`angos.registry.paths.reconcile_runs`, fs or S3 alike), under a metadata lock so
two runs that end together do not lose an update::

    {"last_run_at": 1767225600.5,        # unix seconds, when the last run finished
     "last_success_at": 1767139200.2,    # ... the last run that exited 0 (null: never)
     "consecutive_failures": 2,          # runs in a row that exited non-zero
     "last": {"exit_code": 1, "tags_checked": 812, "enqueued": 3, "coalesced": 0,
              "skipped": 1, "failed": 0, "waiting": 2}}

A run fails (exit code 1) when a downstream probe was skipped, an enqueue failed, or
jobs were still waiting when it stopped (a downstream down). A run that crashes is
recorded as failed too, when the store still takes the write.

:func:`publish` (called by the server's gauge refresher, one process at a time) turns the
record into ``angos_replication_reconcile_last_run_timestamp_seconds``,
``angos_replication_reconcile_last_success_timestamp_seconds`` (both 0 before any run) and
``angos_replication_reconcile_consecutive_failures``.
"""

from __future__ import annotations

import json
import logging
import time

from .. import metrics as m
from ..registry import paths
from ..storage import NotFound

log = logging.getLogger("angos.replication.runs")

LOCK = "replication:reconcile-runs"
COUNTS = ("tags_checked", "enqueued", "coalesced", "skipped", "failed", "waiting")


def read(registry) -> dict | None:
    """The record, or None before the first run (or when it is unreadable: logged)."""
    try:
        doc = json.loads(registry.meta_store.get(paths.reconcile_runs()))
    except NotFound:
        return None
    except ValueError:
        log.warning("the reconcile run record %s is not JSON; it is replaced by the next run",
                    paths.reconcile_runs())
        return None
    return doc if isinstance(doc, dict) else None


def record(registry, exit_code: int, counts: dict, finished_at: float | None = None) -> dict:
    """Add one finished run (``counts``: the :data:`COUNTS` of its report) to the record; returns it."""
    at = time.time() if finished_at is None else finished_at
    with registry.locks.lock(LOCK):
        prev = read(registry) or {}
        ok = exit_code == 0
        doc = {"last_run_at": at,
               "last_success_at": at if ok else prev.get("last_success_at"),
               "consecutive_failures": 0 if ok else int(prev.get("consecutive_failures") or 0) + 1,
               "last": {"exit_code": exit_code, **{k: int(counts.get(k, 0)) for k in COUNTS}}}
        registry.meta_store.put(paths.reconcile_runs(), json.dumps(doc, separators=(",", ":")).encode())
    return doc


def publish(registry) -> dict | None:
    """Set the three reconcile gauges from the record (0 before the first run); returns the record."""
    doc = read(registry) or {}
    m.RECONCILE_LAST_RUN.set(float(doc.get("last_run_at") or 0))
    m.RECONCILE_LAST_SUCCESS.set(float(doc.get("last_success_at") or 0))
    m.RECONCILE_FAILURES.set(int(doc.get("consecutive_failures") or 0))
    return doc or None
