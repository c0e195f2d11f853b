"""``scrub --tags``, ``--manifests``, ``--referrers``: metadata consistency repairs.

Each repair is local: it fixes this instance's bookkeeping and emits no
registry event, so nothing it does replicates (a downstream's own scrub
repairs the downstream).

- ``--tags``: a tag record that does not parse (or whose name is not a valid
  tag) is logged at warning and removed; a tag whose revision is missing is
  removed. The removal runs under the ``tag:<ns>:<tag>`` lock and re-reads
  the record there, so a tag re-pointed meanwhile is left alone. A push
  writes its revision before its tag, so an in-flight push never looks
  dangling.
- ``--manifests``: every revision must have a reference marker for each blob
  and child manifest it names (``_refs/<alg>/<hex>/<manifest>``); missing
  markers are rewritten (a crash between a revision and its markers would
  otherwise let ``--orphan-grants`` reclaim blobs still in use). Markers whose
  manifest revision no longer exists are removed. A revision that cannot be
  decoded or parsed is reported (exit 1) and left in place.
- ``--referrers``: a referrer entry whose manifest revision is gone is
  removed; a revision with a ``subject`` whose entry is missing gets it back.

``--dry-run`` prints one line per change::

    RemoveTag namespace=<ns> tag=<tag> reason=<corrupt|dangling|invalid-name>
    WriteMarker namespace=<ns> target=<digest> manifest=<digest>
    RemoveMarker namespace=<ns> target=<digest> manifest=<digest>
    RemoveReferrer namespace=<ns> subject=<digest> manifest=<digest>
    WriteReferrer namespace=<ns> subject=<digest> manifest=<digest>
"""

from __future__ import annotations

import json
import logging

from ..oci.digest import Digest
from ..oci.manifest import parse_manifest
from ..oci.reference import is_valid_tag
from ..registry import paths
from ..registry.manifests import decode_revision
from ..storage import NotFound
from .common import PhaseRun, build_registry_for_scrub, digests_under, namespaces

log = logging.getLogger("angos.maintenance.tags")


def run_tags(cfg, dry_run: bool, out=print, registry=None) -> int:
    reg = registry or build_registry_for_scrub(cfg)
    meta = reg.meta_store
    phase = PhaseRun("tags", dry_run, out)
    for ns in namespaces(meta):
        for tag in meta.children(paths.tags_dir(ns)):
            phase.tick("tags")
            try:
                reason = _tag_problem(reg, ns, tag)
                if reason is None:
                    phase.count("ok")
                    continue
                if dry_run:
                    phase.act(f"RemoveTag namespace={ns} tag={tag} reason={reason}")
                    phase.count("removed")
                    continue
                with reg.locks.lock(f"tag:{ns}:{tag}"):
                    reason = _tag_problem(reg, ns, tag)
                    if reason is None:
                        phase.count("ok")
                        continue
                    meta.delete(paths.tag(ns, tag))
                phase.act(f"RemoveTag namespace={ns} tag={tag} reason={reason}")
                phase.count("removed")
            except Exception as exc:  # noqa: BLE001 - one bad tag must not stop the sweep
                phase.problem("tags: %s:%s: %s", ns, tag, exc)
    return phase.finish(("removed", "ok"))


def _tag_problem(reg, ns: str, tag: str) -> str | None:
    """Why a tag must go (None when it is sound or already gone)."""
    meta = reg.meta_store
    try:
        raw = meta.get(paths.tag(ns, tag))
    except NotFound:
        return None
    if not is_valid_tag(tag):
        log.warning("tags: %s has an entry named %r, which is not a valid tag; removing it", ns, tag)
        return "invalid-name"
    try:
        doc = json.loads(raw)
        d = Digest.parse(doc["digest"])
    except Exception as exc:  # noqa: BLE001 - any unreadable record is corrupt
        log.warning("tags: corrupt tag record %s:%s (%s); removing it", ns, tag, exc)
        return "corrupt"
    if not reg.manifests.has_revision(ns, d):
        return "dangling"
    return None


def run_manifests(cfg, dry_run: bool, out=print, registry=None) -> int:
    reg = registry or build_registry_for_scrub(cfg)
    meta = reg.meta_store
    phase = PhaseRun("manifests", dry_run, out)
    for ns in namespaces(meta):
        for d in reg.manifests.list_revisions(ns):
            phase.tick("revisions")
            got = _parsed(reg, ns, d, phase)
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
    return phase.finish(("markers_written", "markers_removed", "unreadable"))


def _parsed(reg, ns: str, d: Digest, phase: PhaseRun):
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


def run_referrers(cfg, dry_run: bool, out=print, registry=None) -> int:
    reg = registry or build_registry_for_scrub(cfg)
    meta = reg.meta_store
    phase = PhaseRun("referrers", dry_run, out)
    for ns in namespaces(meta):
        for subject in digests_under(meta, paths.referrers_root(ns)):
            for entry in meta.children(paths.referrers_dir(ns, subject)):
                phase.tick("referrers")
                try:
                    manifest = paths.digest_from_entry(entry)
                except Exception:  # noqa: BLE001
                    manifest = None
                if manifest is not None and reg.manifests.has_revision(ns, manifest):
                    continue
                phase.act(f"RemoveReferrer namespace={ns} subject={subject} manifest={manifest or entry}")
                phase.count("removed")
                if not dry_run and (manifest is None or not reg.manifests.has_revision(ns, manifest)):
                    meta.delete(f"{paths.referrers_dir(ns, subject)}/{entry}")
        for d in reg.manifests.list_revisions(ns):
            got = _parsed(reg, ns, d, phase)
            if got is None:
                continue
            rev, parsed = got
            if parsed.subject is None or meta.exists(paths.referrer(ns, parsed.subject.digest, d)):
                continue
            phase.act(f"WriteReferrer namespace={ns} subject={parsed.subject.digest} manifest={d}")
            phase.count("written")
            if not dry_run:
                desc = {"mediaType": parsed.media_type, "digest": str(d), "size": len(rev.body)}
                art = parsed.referrer_artifact_type()
                if art:
                    desc["artifactType"] = art
                if parsed.annotations:
                    desc["annotations"] = parsed.annotations
                meta.put(paths.referrer(ns, parsed.subject.digest, d), json.dumps(desc).encode())
    return phase.finish(("removed", "written", "unreadable"))
