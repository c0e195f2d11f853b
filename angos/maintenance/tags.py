"""``scrub --tags``: remove tags that cannot be served.

A tag record that does not parse, or whose name is not a valid tag, is
logged at warning and removed; a tag whose manifest revision is missing
(dangling) is removed. The removal runs under the ``tag:<ns>:<tag>`` lock and
re-reads the record there, so a tag re-pointed meanwhile is left alone. A
push writes its revision before its tag, so an in-flight push never looks
dangling. Like every repair phase this is local bookkeeping: no registry
event is emitted and nothing replicates (a downstream's own scrub repairs
the downstream).

``--dry-run`` prints one line per tag::

    RemoveTag namespace=<ns> tag=<tag> reason=<corrupt|dangling|invalid-name>
"""

from __future__ import annotations

import json
import logging

from ..oci.digest import Digest
from ..oci.reference import is_valid_tag
from ..registry import paths
from ..storage import NotFound
from .common import PhaseRun, build_registry_for_scrub, namespaces

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
