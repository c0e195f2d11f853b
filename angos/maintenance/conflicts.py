"""``scrub --tombstones``, second part: forget conflict records past their horizon.

A conflict record (:mod:`angos.replication.conflicts`) is kept for the longer
of ``[global.replication] conflict_protection`` (while it protects its loser)
and ``tombstone_horizon`` (as long as deletes are remembered), so the log
always covers every loser that is still protected. Older records are removed,
oldest first; the records are newest first by name, so only the expired tail
of the listing is read.

``--dry-run`` prints one line per record::

    RemoveConflictRecord id=<id> namespace=<ns> tag=<tag>
"""

from __future__ import annotations

from datetime import timedelta

from ..registry.timestamps import now
from ..replication.conflicts import ConflictLog
from .common import PhaseRun, build_registry_for_scrub


def horizon_secs(cfg) -> float:
    rs = cfg.global_.replication
    return max(rs.conflict_protection, rs.tombstone_horizon)


def run(cfg, dry_run: bool, out=print, registry=None) -> int:
    reg = registry or build_registry_for_scrub(cfg)
    conflicts = ConflictLog(reg.meta_store)
    phase = PhaseRun("conflicts", dry_run, out)
    for rid in conflicts.expired(now() - timedelta(seconds=horizon_secs(cfg))):
        phase.tick("records")
        try:
            doc = conflicts.read(rid) or {}
            phase.act(f"RemoveConflictRecord id={rid} namespace={doc.get('namespace')} tag={doc.get('tag')}")
            if not dry_run:
                conflicts.trim(rid)
            phase.count("removed")
        except Exception as exc:  # noqa: BLE001 - one bad record must not stop the sweep
            phase.problem("conflicts: %s: %s", rid, exc)
    return phase.finish(("removed",))
