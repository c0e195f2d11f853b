"""What waits for each downstream: replication backlog, oldest pending job and dead letters.

:func:`downstream_backlog` reads the ``replication`` queue (any :class:`~angos.queue.JobQueue`:
SQLite, Redis or S3) and answers one :class:`Backlog` per configured downstream, in
configuration order. A job belongs to the downstream named in its lock key
(``sync|<downstream>|<namespace>|<reference>``, ``referrers|<downstream>|<namespace>|<subject>``,
see :mod:`.jobs`). Jobs of a downstream that is no
longer configured are not reported (they dead-letter, and ``scrub --replication-orphans``
clears them).

- ``jobs``: pending and running jobs, whether due now or deferred (a downstream that is
  down keeps its jobs pending with a later due time: they are its backlog);
- ``oldest_pending_at``: the creation time of the oldest of them. Coalescing keeps a
  waiting job's creation time and a retry keeps it too, so this is when the oldest change
  that has still not reached the downstream was queued;
- ``dead_letters``: dead-lettered jobs.

Cost is bounded: it reads the lock keys (never the bodies) of at most :data:`CAP` pending
and :data:`CAP` dead-lettered jobs, oldest first. With more than that in the queue the
counts saturate (their sum is at most :data:`CAP`) and ``saturated`` is set; the oldest
jobs are always among those read. (The S3 job store keeps lock keys only inside the job
objects: a refresh there reads the bodies that changed since the last one.)

:func:`publish` sets ``angos_replication_backlog``, ``angos_replication_oldest_pending_seconds``
and ``angos_replication_dead_letters`` from it. One server process at a time publishes
(:func:`angos.queue.gauges.start_refresher`), so the gauges use the ``livemostrecent``
multiprocess mode. The UI reads :func:`downstream_backlog` directly.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from .. import metrics as m

CAP = 10000


@dataclass(frozen=True)
class Backlog:
    downstream: str
    jobs: int = 0
    oldest_pending_at: float | None = None
    dead_letters: int = 0
    saturated: bool = False

    def oldest_pending_seconds(self, now: float | None = None) -> float:
        """How long the oldest waiting job has waited (0 when none waits)."""
        if self.oldest_pending_at is None:
            return 0.0
        return max(0.0, (time.time() if now is None else now) - self.oldest_pending_at)


def downstream_names(cfg) -> list[str]:
    """Every configured downstream name, once, in configuration order (the metrics' label values)."""
    return list(dict.fromkeys(ds.name for repo in cfg.repository.values() for ds in repo.downstream))


def _downstream_of(lock_key: str) -> str | None:
    # Split from the right: namespaces, tags and digests never contain "|", a downstream name may.
    parts = lock_key.rsplit("|", 2)
    if len(parts) != 3:
        return None
    kind, sep, name = parts[0].partition("|")
    return name if sep and kind in ("sync", "referrers") else None


def downstream_backlog(cfg, queue, cap: int = CAP) -> dict[str, Backlog]:
    """One :class:`Backlog` per configured downstream of ``cfg``, read from the replication ``queue``."""
    names = downstream_names(cfg)
    jobs = dict.fromkeys(names, 0)
    oldest: dict[str, float] = {}
    dead = dict.fromkeys(names, 0)
    pending = queue.lock_keys("pending", cap)
    failed = queue.lock_keys("failed", cap)
    for lock_key, created_at in pending:
        name = _downstream_of(lock_key)
        if name in jobs:
            jobs[name] += 1
            if name not in oldest or created_at < oldest[name]:
                oldest[name] = created_at
    for lock_key, _ in failed:
        name = _downstream_of(lock_key)
        if name in dead:
            dead[name] += 1
    saturated = len(pending) >= cap or len(failed) >= cap
    return {n: Backlog(n, jobs[n], oldest.get(n), dead[n], saturated) for n in names}


def publish(cfg, queue) -> dict[str, Backlog]:
    """Compute :func:`downstream_backlog` and set the three per-downstream gauges from it."""
    found = downstream_backlog(cfg, queue)
    now = time.time()
    for name, b in found.items():
        m.REPLICATION_BACKLOG.labels(name).set(b.jobs)
        m.REPLICATION_OLDEST_PENDING.labels(name).set(round(b.oldest_pending_seconds(now), 3))
        m.REPLICATION_DEAD_LETTERS.labels(name).set(b.dead_letters)
    return found
