"""``scrub --orphan-grants AGE``: revoke blob grants no manifest in their namespace uses.

A namespace owns a blob through a grant (``repositories/<ns>/_layers/...``)
written when the blob was uploaded or mounted there. Normally a manifest
follows and writes reference markers (``_refs/<alg>/<hex>/...``); when none
ever does (a replicated push whose manifest then lost last-writer-wins, a
client that gave up, a manifest deleted since) the grant keeps the bytes
alive forever. This phase revokes every grant that

- has no reference marker in its namespace, and
- is older than AGE (the grant record's ``created_at``; the object's mtime
  when the record is unreadable).

The age gate is what protects in-flight pushes: a client uploads its blobs
first and writes the manifest last, so a young unreferenced grant is
usually a push still in progress. Pick AGE well above your longest push
(e.g. ``24h``). Revocation goes through :meth:`BlobService.revoke`, which
deletes the bytes under the ``blob:<digest>`` lock once no namespace holds a
grant, so bytes another namespace still owns are never touched.

Run ``--manifests`` first (scrub orders it so): it rewrites markers a crash
may have left missing, which would otherwise make a used grant look unused.

``--dry-run`` prints one line per grant it would revoke::

    RevokeGrant namespace=<ns> digest=<digest> age=<seconds>s
"""

from __future__ import annotations

from ..registry import paths
from ..storage import NotFound
from .common import PhaseRun, age_secs, build_registry_for_scrub, digests_under, namespaces


def run(cfg, age: float, dry_run: bool, out=print, registry=None) -> int:
    reg = registry or build_registry_for_scrub(cfg)
    meta = reg.meta_store
    phase = PhaseRun("orphan-grants", dry_run, out)
    for ns in namespaces(meta):
        for d in digests_under(meta, paths.grants_dir(ns)):
            phase.tick("grants")
            try:
                if meta.children(paths.ref_dir(ns, d)):
                    phase.count("referenced")
                    continue
                try:
                    mtime = meta.stat(paths.grant(ns, d)).mtime
                except NotFound:
                    continue  # revoked since we listed it
                age_now = age_secs(reg.blobs.grant_created_at(ns, d), mtime)
                if age_now is None or age_now < age:
                    phase.count("young")
                    continue
                phase.act(f"RevokeGrant namespace={ns} digest={d} age={int(age_now)}s")
                if dry_run:
                    phase.count("orphaned")
                    continue
                # Re-check just before revoking: a manifest may have been pushed since.
                if meta.children(paths.ref_dir(ns, d)):
                    phase.count("referenced")
                    continue
                phase.count("revoked")
                if reg.blobs.revoke(ns, d):
                    phase.count("blobs_deleted")
            except Exception as exc:  # noqa: BLE001 - one bad entry must not stop the sweep
                phase.problem("orphan-grants: %s %s: %s", ns, d, exc)
    return phase.finish(("orphaned", "young", "referenced") if dry_run
                        else ("revoked", "blobs_deleted", "young", "referenced"))
