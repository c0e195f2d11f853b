"""``scrub --referrers``: keep the referrers index in step with manifest revisions.

A referrer entry (``_referrers/<subject>/<manifest>``) whose manifest
revision is gone is removed; a revision with a ``subject`` whose entry is
missing gets it back (the descriptor a push would have written). Local
bookkeeping only: nothing replicates.

``--dry-run`` prints one line per change::

    RemoveReferrer namespace=<ns> subject=<digest> manifest=<digest>
    WriteReferrer namespace=<ns> subject=<digest> manifest=<digest>
"""

from __future__ import annotations

import json

from ..registry import paths
from .common import PhaseRun, build_registry_for_scrub, digests_under, namespaces
from .manifests import parsed_revision


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
            got = parsed_revision(reg, ns, d, phase)
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
