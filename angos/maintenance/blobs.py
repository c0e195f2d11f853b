"""``scrub --blobs``: repair the blob index, reclaim unowned bytes, verify stored digests.

Three passes over the blob store and the grants (``repositories/<ns>/_layers``):

1. **Index repair.** ``blob-index/<alg>/<hex>/<ns>`` must list exactly the
   namespaces holding a grant: missing entries are added, stale ones removed.
2. **Reclaim.** Bytes under ``blobs/`` that no namespace holds a grant for
   are deleted once their mtime is older than the grace period
   (:data:`GRACE_SECS`, one hour; ``ANGOS_SCRUB_BLOB_GRACE=<duration>``
   overrides it, e.g. for tests or a store known to be idle).
3. **Verify.** Every remaining blob is re-hashed. A mismatch is logged at
   error, its bytes are moved to ``quarantine/<alg>/<hex>`` (kept for
   forensics, never served) and every grant on it is revoked, so clients
   get ``BLOB_UNKNOWN`` and re-push instead of pulling corrupt layers. The
   exit code is 1 when anything was corrupt.

Safe while the server serves traffic: every change to one digest runs
under its ``blob:<digest>`` lock, the same lock an upload's completion and
a mount hold while they create bytes and grant them, and the decision is
re-checked under it (index still empty, bytes still old). Those writers
always add the index entry together with the grant, so an empty index
under the lock means nobody owns the bytes. The grace period covers what
the lock cannot: a strategy that is not shared with the server (``memory``)
and storage whose listings lag.

``--dry-run`` prints one line per change::

    AddIndexEntry digest=<d> namespace=<ns>
    RemoveIndexEntry digest=<d> namespace=<ns>
    ReclaimBlob digest=<d> size=<bytes>
    QuarantineBlob digest=<d> actual=<digest of the stored bytes>
"""

from __future__ import annotations

import hashlib
import os
import time

from ..registry import paths
from ..storage import NotFound
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
            owned = held.get(d) if dry_run else reg.blobs.namespaces_holding(d)
            if d in stored and not owned:
                _reclaim(reg, d, grace, phase)
        except Exception as exc:  # noqa: BLE001 - one bad blob must not stop the sweep
            phase.problem("blobs: %s: %s", d, exc)

    for d in sorted(stored, key=str):
        try:
            if not blobs.exists(paths.blob_data(d)):
                continue  # reclaimed above or by a concurrent delete
            actual = _hash(blobs, d)
            phase.count("verified")
            if actual != d.hex:
                _quarantine(reg, d, phase)
        except NotFound:
            continue
        except Exception as exc:  # noqa: BLE001
            phase.problem("blobs: verifying %s: %s", d, exc)
    keys = ("verified", "reclaimed", "reclaimed_bytes", "young", "index_added", "index_removed", "corrupt")
    return phase.finish(keys)


def _index(reg, d, granted: set, phase: PhaseRun) -> None:
    meta = reg.meta_store
    listed = set(reg.blobs.namespaces_holding(d))
    if listed == granted:
        return
    if phase.dry_run:
        for ns in sorted(granted - listed):
            phase.act(f"AddIndexEntry digest={d} namespace={ns}")
            phase.count("index_added")
        for ns in sorted(listed - granted):
            phase.act(f"RemoveIndexEntry digest={d} namespace={ns}")
            phase.count("index_removed")
        return
    with reg.locks.lock(f"blob:{d}"):
        # Grants are created and revoked under this lock: what we see now is current.
        for ns in sorted(granted | listed):
            has_grant = meta.exists(paths.grant(ns, d))
            in_index = meta.exists(paths.blob_index(d, ns))
            if has_grant and not in_index:
                meta.put_if_absent(paths.blob_index(d, ns), b"")
                phase.act(f"AddIndexEntry digest={d} namespace={ns}")
                phase.count("index_added")
            elif in_index and not has_grant:
                meta.delete(paths.blob_index(d, ns))
                phase.act(f"RemoveIndexEntry digest={d} namespace={ns}")
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
        if reg.blobs.namespaces_holding(d):
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
            meta.delete(paths.blob_index(d, ns))
