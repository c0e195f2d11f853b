"""``scrub --tombstones``: forget deletes older than the tombstone horizon.

A tombstone (:mod:`angos.registry.tombstones`) lets last-writer-wins compare a
delete with a push that arrives later. Past ``[global.replication]
tombstone_horizon`` (default 30 days) it is removed: a peer that was offline
longer than that can bring the deleted tag back with its own older copy (the
operator guide says so). Each removal re-reads the tombstone under the
``tag:<ns>:<tag>`` lock, so one written again meanwhile is kept. A removed
tag tombstone takes the tag's replication status records with it
(:func:`angos.replication.status.forget_tag`). The same phase then trims the
replication conflict log (:mod:`.conflicts`).

``--dry-run`` prints one line per tombstone::

    RemoveTombstone namespace=<ns> tag=<tag> deleted_at=<RFC 3339>
    RemoveTombstone namespace=<ns> digest=<digest> deleted_at=<RFC 3339>
"""

from __future__ import annotations

import time

from ..replication.status import forget_tag
from .common import PhaseRun, build_registry_for_scrub, namespaces


def _expired(tomb, cutoff: float) -> bool:
    deleted = tomb.deleted if tomb is not None else None
    return deleted is not None and deleted.timestamp() < cutoff


def run(cfg, dry_run: bool, out=print, registry=None) -> int:
    reg = registry or build_registry_for_scrub(cfg)
    store = reg.manifests.tombstones
    phase = PhaseRun("tombstones", dry_run, out)
    cutoff = time.time() - cfg.global_.replication.tombstone_horizon
    for ns in namespaces(reg.meta_store):
        for tag in store.tag_names(ns):
            phase.tick("tombstones")
            try:
                tomb = store.tag(ns, tag)
                if not _expired(tomb, cutoff):
                    phase.count("kept")
                    continue
                if not dry_run:
                    with reg.locks.lock(f"tag:{ns}:{tag}"):
                        tomb = store.tag(ns, tag)
                        if not _expired(tomb, cutoff):
                            phase.count("kept")
                            continue
                        store.unbury_tag(ns, tag)
                        forget_tag(reg.meta_store, ns, tag)
                phase.act(f"RemoveTombstone namespace={ns} tag={tag} deleted_at={tomb.deleted_at}")
                phase.count("removed")
            except Exception as exc:  # noqa: BLE001 - one bad record must not stop the sweep
                phase.problem("tombstones: %s:%s: %s", ns, tag, exc)
        for d in store.digests(ns):
            phase.tick("tombstones")
            tomb = store.digest(ns, d)
            if not _expired(tomb, cutoff):
                phase.count("kept")
                continue
            if not dry_run:
                store.unbury_digest(ns, d)
            phase.act(f"RemoveTombstone namespace={ns} digest={d} deleted_at={tomb.deleted_at}")
            phase.count("removed")
    rc = phase.finish(("removed", "kept"))
    from . import conflicts

    return rc | conflicts.run(cfg, dry_run, out, reg)
