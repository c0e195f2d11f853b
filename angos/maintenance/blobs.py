"""``scrub --blobs``: repair the blob index, reclaim unowned bytes, verify stored digests,
and report manifests whose blob bytes are gone.

Four passes over the blob store and the grants (``repositories/<ns>/_layers``):

1. **Index repair.** ``blob-index/<alg>/<hex>/`` must hold exactly one entry
   (:func:`angos.registry.paths.blob_index`) per namespace holding a grant:
   missing entries are added, stale or unreadable ones removed, and an entry
   an earlier version wrote for a long name (:func:`paths.legacy_blob_index`)
   is rewritten in the bounded form (new entry first, then the old one goes).
2. **Reclaim.** Bytes under ``blobs/`` with no index entry at all are
   deleted once their mtime is older than the grace period
   (:data:`GRACE_SECS`, one hour; ``ANGOS_SCRUB_BLOB_GRACE=<duration>``
   overrides it, e.g. for tests or a store known to be idle).
3. **Verify.** Every remaining blob is re-hashed. A mismatch is logged at
   error, its bytes are moved to ``quarantine/<alg>/<hex>`` (kept for
   forensics, never served) and every grant on it is revoked, so clients
   get ``BLOB_UNKNOWN`` and re-push instead of pulling corrupt layers. The
   exit code is 1 when anything was corrupt.
4. **Missing bytes** (:mod:`.missing`). A manifest naming a blob whose bytes
   are not stored cannot be pulled: each one is reported as a problem (exit
   1). Nothing can be repaired; the owner must push the blob again.

Safe while the server serves traffic: every change to one digest runs
under its ``blob:<digest>`` lock, the same lock an upload's completion and
a mount hold while they create bytes and grant them, and the decision is
re-checked under it (index still empty, bytes still old). Those writers
add the index entry before the grant, so an empty index under the lock
means nobody owns the bytes. The grace period covers what the lock cannot:
a strategy that is not shared with the server (``memory``) and storage
whose listings lag.

``--dry-run`` prints one line per change::

    AddIndexEntry digest=<d> namespace=<ns>
    RemoveIndexEntry digest=<d> namespace=<ns or ?> entry=<name>
    RewriteIndexEntry digest=<d> namespace=<ns>
    ReclaimBlob digest=<d> size=<bytes>
    QuarantineBlob digest=<d> actual=<digest of the stored bytes>
"""

from __future__ import annotations

import hashlib
import os
import time

from ..registry import paths
from ..storage import NotFound
from . import missing
from .common import PhaseRun, build_registry_for_scrub, digests_under, namespaces

GRACE_SECS = 3600.0


def grace_secs() -> float:
    from ..config import parse_duration

    value = os.environ.get("ANGOS_SCRUB_BLOB_GRACE")
    return parse_duration(value) if value else GRACE_SECS


def _grants(meta) -> dict:
    held: dict = {}
    for ns in namespaces(meta):
        for d in digests_under(meta, paths.grants_dir(ns)):
            held.setdefault(d, set()).add(ns)
    return held


def _hash(blobs, d) -> str:
    h = hashlib.new(d.algorithm)
    with blobs.open_read(paths.blob_data(d)) as fh:
        while True:
            block = fh.read(1 << 20)
            if not block:
                break
            h.update(block)
    return h.hexdigest()


def run(cfg, dry_run: bool, out=print, registry=None) -> int:
    reg = registry or build_registry_for_scrub(cfg)
    meta, blobs = reg.meta_store, reg.blob_store
    grace = grace_secs()
    phase = PhaseRun("blobs", dry_run, out)
    held = _grants(meta)
    stored = set(digests_under(blobs, paths.BLOBS, sharded=True))
    indexed = set(digests_under(meta, paths.BLOB_INDEX))

    for d in sorted(stored | indexed | set(held), key=str):
        phase.tick("blobs")
        try:
            _index(reg, d, held.get(d, set()), phase)
            # After a real repair the index is current; a dry run repaired nothing, so judge by the grants.
            owned = held.get(d) if dry_run else meta.children(paths.blob_index_dir(d))
            if d in stored and not owned:
                _reclaim(reg, d, grace, phase)
        except Exception as exc:  # noqa: BLE001 - one bad blob must not stop the sweep
            phase.problem("blobs: %s: %s", d, exc)

    present = set()  # verified intact: what the missing-bytes pass need not look up again
    for d in sorted(stored, key=str):
        try:
            if not blobs.exists(paths.blob_data(d)):
                continue  # reclaimed above or by a concurrent delete
            actual = _hash(blobs, d)
            phase.count("verified")
            if actual != d.hex:
                _quarantine(reg, d, phase)
            else:
                present.add(d)
        except NotFound:
            continue
        except Exception as exc:  # noqa: BLE001
            phase.problem("blobs: verifying %s: %s", d, exc)
    missing.report(reg, present, phase)
    keys = ("verified", "reclaimed", "reclaimed_bytes", "young", "index_added", "index_removed", "corrupt",
            "missing")
    return phase.finish(keys)


def _entries(reg, d) -> dict:
    """``{entry key: namespace or None}`` for what the index lists (None: unreadable)."""
    out = {}
    for name in reg.meta_store.children(paths.blob_index_dir(d)):
        out[paths.blob_index_entry(d, name)] = reg.blobs.entry_namespace(d, name)
    return out


def _plan(d, granted: set, entries: dict):
    """What makes the index match ``granted``: (namespaces to add, entries to rewrite, keys to remove)."""
    add, rewrite, remove = [], [], []
    for ns in sorted(granted):
        if paths.blob_index(d, ns) in entries:
            continue
        legacy = paths.legacy_blob_index(d, ns)
        (rewrite if legacy in entries else add).append(ns)
    wanted = {paths.blob_index(d, ns) for ns in granted}
    rewritten = {paths.legacy_blob_index(d, ns) for ns in rewrite}
    for key in sorted(entries):
        if key not in wanted and key not in rewritten:
            remove.append(key)
    return add, rewrite, remove


def _index(reg, d, granted: set, phase: PhaseRun) -> None:
    meta = reg.meta_store
    add, rewrite, remove = _plan(d, granted, _entries(reg, d))
    if not (add or rewrite or remove):
        return
    if not phase.dry_run:
        with reg.locks.lock(f"blob:{d}"):
            # Grants are created and revoked under this lock: what we read now is current.
            entries = _entries(reg, d)
            candidates = set(granted) | {ns for ns in entries.values() if ns is not None}
            current = {ns for ns in candidates if meta.exists(paths.grant(ns, d))}
            add, rewrite, remove = _plan(d, current, entries)
            for ns in add + rewrite:
                reg.blobs.index(ns, d)  # the bounded entry exists before any old one goes
            for key in remove + [paths.legacy_blob_index(d, ns) for ns in rewrite]:
                meta.delete(key)
            _report(d, add, rewrite, remove, entries, phase)
        return
    _report(d, add, rewrite, remove, _entries(reg, d), phase)


def _report(d, add, rewrite, remove, entries, phase: PhaseRun) -> None:
    for ns in add:
        phase.act(f"AddIndexEntry digest={d} namespace={ns}")
        phase.count("index_added")
    for ns in rewrite:
        phase.act(f"RewriteIndexEntry digest={d} namespace={ns}")
        phase.count("index_rewritten")
    for key in remove:
        ns = entries.get(key)
        line = f"RemoveIndexEntry digest={d} namespace={ns if ns is not None else '?'}"
        if ns is None or paths.blob_index(d, ns) != key:
            line += f" entry={key.rsplit('/', 1)[-1]}"
        phase.act(line)
        phase.count("index_removed")


def _reclaim(reg, d, grace: float, phase: PhaseRun) -> None:
    blobs, key = reg.blob_store, paths.blob_data(d)
    try:
        info = blobs.stat(key)
    except NotFound:
        return
    if time.time() - info.mtime < grace:
        phase.count("young")
        return
    if phase.dry_run:
        phase.act(f"ReclaimBlob digest={d} size={info.size}")
        phase.count("reclaimed")
        phase.count("reclaimed_bytes", info.size)
        return
    with reg.locks.lock(f"blob:{d}"):
        # Re-check under the lock: an upload completion or a mount may have granted it since.
        # Any entry at all keeps the bytes, even one whose name cannot be read back.
        if reg.meta_store.children(paths.blob_index_dir(d)):
            return
        try:
            info = blobs.stat(key)
        except NotFound:
            return
        if time.time() - info.mtime < grace:
            phase.count("young")
            return
        blobs.delete(key)
    phase.act(f"ReclaimBlob digest={d} size={info.size}")
    phase.count("reclaimed")
    phase.count("reclaimed_bytes", info.size)


def _quarantine(reg, d, phase: PhaseRun) -> None:
    meta, blobs = reg.meta_store, reg.blob_store
    with reg.locks.lock(f"blob:{d}"):
        # Bytes under a content address are never rewritten in place, but confirm before acting.
        try:
            actual = _hash(blobs, d)
        except NotFound:
            return
        if actual == d.hex:
            return
        phase.problem("blobs: CORRUPT blob %s: stored bytes hash to %s:%s; %s", d, d.algorithm, actual,
                      "would quarantine it and revoke its grants" if phase.dry_run
                      else "quarantined, grants revoked")
        phase.count("corrupt")
        phase.act(f"QuarantineBlob digest={d} actual={d.algorithm}:{actual}")
        if phase.dry_run:
            return
        blobs.move(paths.blob_data(d), paths.quarantine(d))
        owners = set(reg.blobs.namespaces_holding(d))
        owners |= {ns for ns in namespaces(meta) if meta.exists(paths.grant(ns, d))}
        for ns in sorted(owners):
            meta.delete(paths.grant(ns, d))
            reg.blobs.unindex(ns, d)
