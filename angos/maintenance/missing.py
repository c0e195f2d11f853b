"""The last pass of ``scrub --blobs``: report manifests whose blob bytes are gone.

A manifest revision writes a reference marker per blob it names
(``repositories/<ns>/_refs/<alg>/<hex>/<manifest>``). A marker whose target
is neither a manifest revision of the namespace (an index's child) nor stored
under ``blobs/`` means a pull of that manifest fails: this is how lost bytes
show (for example a grant written by an earlier version without its index
entry, whose bytes a sibling namespace's delete then removed). Each such
manifest and blob is a problem, so the run exits 1::

    blobs: MISSING bytes of <blob> named by manifest <manifest> in <ns> (grant held: yes|no)

Not problems: a descriptor with ``urls`` (non-distributable, never pushed),
a missing child manifest (a sparse index is allowed), and bytes a previous
run quarantined (that run failed; these are counted as ``quarantined_refs``
and logged as warnings until the blob is pushed again). Nothing is
changed, with or without ``--dry-run``: no repair can bring bytes back, and
the namespace must push the blob again (``HEAD`` already answers 404 there,
so clients do).

Cost: one walk of each namespace's ``_refs`` and revision listings; the
manifest bodies are read only for the markers whose bytes are missing.
"""

from __future__ import annotations

from ..oci.manifest import parse_manifest
from ..registry import paths
from ..registry.manifests import decode_revision
from ..storage import NotFound
from .common import PhaseRun, digests_under, namespaces


def report(reg, present: set, phase: PhaseRun) -> None:
    """``present``: digests already known to be stored (each other target costs one lookup)."""
    meta, blobs = reg.meta_store, reg.blob_store
    for ns in namespaces(meta):
        try:
            revisions = set(reg.manifests.list_revisions(ns))
            for target in digests_under(meta, paths.refs_root(ns)):
                if target in revisions or target in present:
                    continue
                if blobs.exists(paths.blob_data(target)):
                    continue  # uploaded since the listing
                quarantined = blobs.exists(paths.quarantine(target))
                for manifest in _naming(reg, ns, target):
                    if quarantined:
                        # Known and already failed the run that quarantined it; the owner must re-push.
                        phase.count("quarantined_refs")
                        phase.log.warning("blobs: %s named by manifest %s in %s is quarantined (corrupt); "
                                          "push it again", target, manifest, ns)
                        continue
                    phase.count("missing")
                    phase.problem("blobs: MISSING bytes of %s named by manifest %s in %s (grant held: %s)",
                                  target, manifest, ns, "yes" if reg.blobs.has_grant(ns, target) else "no")
        except Exception as exc:  # noqa: BLE001 - one bad namespace must not stop the sweep
            phase.problem("blobs: checking references in %s: %s", ns, exc)


def _naming(reg, ns: str, target) -> list:
    """The manifests of ``ns`` that need ``target``'s bytes (not via ``urls``, not as a child)."""
    out = []
    for entry in reg.meta_store.children(paths.ref_dir(ns, target)):
        try:
            manifest = paths.digest_from_entry(entry)
            rev = decode_revision(manifest, reg.meta_store.get(paths.revision(ns, manifest)))
            parsed = parse_manifest(rev.body, rev.media_type)
        except NotFound:
            continue  # a stale marker: --manifests removes it
        except Exception:  # noqa: BLE001 - undecodable revisions are --manifests' problem to report
            continue
        if any(b.digest == target and not b.urls for b in parsed.blobs):
            out.append(manifest)
    return sorted(out, key=str)
