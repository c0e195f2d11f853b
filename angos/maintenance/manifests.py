"""``scrub --manifests``: keep reference markers in step with manifest revisions.

Every revision must have a reference marker for each blob and child
manifest it names (``_refs/<alg>/<hex>/<manifest>``): missing markers are
rewritten, because a crash between a revision and its markers would
otherwise let ``--orphan-grants`` reclaim blobs still in use. Markers whose
manifest revision no longer exists are removed (re-checked just before).
A revision whose recorded media type cannot be served as a Content-Type
(accepted by an older version, e.g. with a trailing newline) gets the type its
body declares, or its structure implies, and is reported. A revision that
cannot be decoded or parsed otherwise is reported (exit 1) and left in place.
Local bookkeeping only: nothing replicates.

``--dry-run`` prints one line per change::

    RepairMediaType namespace=<ns> manifest=<digest> media_type=<type>
    WriteMarker namespace=<ns> target=<digest> manifest=<digest>
    RemoveMarker namespace=<ns> target=<digest> manifest=<digest>
"""

from __future__ import annotations

import logging

from ..oci.digest import Digest
from ..oci.manifest import is_media_type, parse_manifest, servable_media_type
from ..registry import paths
from ..registry.manifests import decode_revision
from ..storage import NotFound
from .common import PhaseRun, build_registry_for_scrub, digests_under, namespaces


def run_manifests(cfg, dry_run: bool, out=print, registry=None) -> int:
    reg = registry or build_registry_for_scrub(cfg)
    meta = reg.meta_store
    phase = PhaseRun("manifests", dry_run, out)
    for ns in namespaces(meta):
        for d in reg.manifests.list_revisions(ns):
            phase.tick("revisions")
            _repair_media_type(reg, ns, d, phase, dry_run)
            got = parsed_revision(reg, ns, d, phase)
            if got is None:
                continue
            parsed = got[1]
            targets = {b.digest for b in parsed.blobs} | {c.digest for c in parsed.children}
            for target in sorted(targets, key=str):
                key = paths.ref_marker(ns, target, d)
                if meta.exists(key):
                    continue
                phase.act(f"WriteMarker namespace={ns} target={target} manifest={d}")
                phase.count("markers_written")
                if not dry_run:
                    meta.put(key, b"")
        for target in digests_under(meta, paths.refs_root(ns)):
            for entry in meta.children(paths.ref_dir(ns, target)):
                try:
                    manifest = paths.digest_from_entry(entry)
                except Exception:  # noqa: BLE001 - a stray name is not a marker: drop it too
                    manifest = None
                if manifest is not None and reg.manifests.has_revision(ns, manifest):
                    continue
                phase.act(f"RemoveMarker namespace={ns} target={target} manifest={manifest or entry}")
                phase.count("markers_removed")
                if not dry_run:
                    # Re-check: the revision may have been pushed (again) since.
                    if manifest is None or not reg.manifests.has_revision(ns, manifest):
                        meta.delete(f"{paths.ref_dir(ns, target)}/{entry}")
    return phase.finish(("markers_written", "markers_removed", "media_types_repaired", "unreadable"))


def _repair_media_type(reg, ns: str, d: Digest, phase: PhaseRun, dry_run: bool) -> None:
    try:
        rev = reg.manifests.revision(ns, d)
    except Exception:  # noqa: BLE001 - one that does not decode is parsed_revision's to report
        return
    if rev is None or is_media_type(rev.media_type):
        return
    media_type = servable_media_type(rev.body)
    phase.problem("%s: revision %s@%s has a media type that cannot be served: %r", phase.name, ns, d,
                  rev.media_type[:100], level=logging.WARNING)
    phase.act(f"RepairMediaType namespace={ns} manifest={d} media_type={media_type}")
    phase.count("media_types_repaired")
    if not dry_run:
        reg.manifests.rewrite_media_type(ns, d, media_type)


def parsed_revision(reg, ns: str, d: Digest, phase: PhaseRun):
    try:
        rev = decode_revision(d, reg.meta_store.get(paths.revision(ns, d)))
    except NotFound:
        return None
    except Exception as exc:  # noqa: BLE001
        phase.count("unreadable")
        phase.problem("%s: revision %s@%s cannot be decoded: %s", phase.name, ns, d, exc)
        return None
    try:
        return rev, parse_manifest(rev.body, rev.media_type)
    except Exception as exc:  # noqa: BLE001
        phase.count("unreadable")
        phase.problem("%s: revision %s@%s does not parse: %s", phase.name, ns, d, exc)
        return None
