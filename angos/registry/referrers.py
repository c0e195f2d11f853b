"""The referrers listing for a subject digest.

Entries come from the referrer index written at push time, plus (per the
spec's "Enabling the Referrers API" rule) manifests listed in an existing
OCI 1.0 fallback tag index (``<alg>-<hex>``) whose own ``subject`` is the
requested digest. ``artifact_type`` filters the list.
"""

from __future__ import annotations

import json

from ..oci import media_types as mt
from ..oci.digest import Digest
from ..oci.reference import referrers_tag
from . import paths


class ReferrerService:
    def __init__(self, meta, manifests):
        self.meta = meta
        self.manifests = manifests

    def list(self, ns: str, subject: Digest, artifact_type: str | None = None) -> list[dict]:
        entries: dict[str, dict] = {}
        base = paths.referrers_dir(ns, subject)
        for name in self.meta.children(base):
            try:
                desc = json.loads(self.meta.get(f"{base}/{name}"))
            except Exception:  # noqa: BLE001 - a vanished or corrupt entry is skipped
                continue
            entries[desc["digest"]] = desc
        for desc in self._fallback_tag_entries(ns, subject):
            entries.setdefault(desc["digest"], desc)
        out = sorted(entries.values(), key=lambda e: e["digest"])
        if artifact_type is not None:
            out = [e for e in out if e.get("artifactType") == artifact_type]
        return out

    def subjects(self, ns: str) -> list[Digest]:
        """Every subject digest that has referrers indexed in ``ns``."""
        out = []
        root = paths.referrers_root(ns)
        for alg in self.meta.children(root):
            for hexpart in self.meta.children(f"{root}/{alg}"):
                try:
                    out.append(Digest.parse(f"{alg}:{hexpart}"))
                except Exception:  # noqa: BLE001 - stray entries are not subjects
                    continue
        return out

    def _fallback_tag_entries(self, ns: str, subject: Digest) -> list[dict]:
        rec = self.manifests.tag_record(ns, referrers_tag(subject))
        if rec is None:
            return []
        try:
            index = self.manifests.revision(ns, Digest.parse(rec.digest))
            doc = json.loads(index.body) if index is not None and index.media_type in mt.INDEX_TYPES else None
        except Exception:  # noqa: BLE001 - the fallback tag is client-maintained; ignore junk
            return []
        out = []
        for desc in (doc or {}).get("manifests", []):
            try:
                d = Digest.parse(desc.get("digest"))
            except Exception:  # noqa: BLE001
                continue
            rev = self.manifests.revision(ns, d)
            if rev is not None and rev.subject == str(subject):
                out.append({k: v for k, v in desc.items()
                            if k in ("mediaType", "digest", "size", "artifactType", "annotations")})
        return out


def referrers_page(entries: list[dict], n: int | None, last: str | None,
                   max_bytes: int) -> tuple[list[dict], bool]:
    """One page of a digest-sorted referrer list, and whether more follow.

    ``last`` (a digest) resumes after that entry and ``n`` caps the count, as for
    tag lists. Independently, a page never grows past ``max_bytes`` of JSON (the
    manifest size limit) so that any client that can read a manifest can read
    it: the spec requires a ``Link`` to the rest when the list does not fit in
    one index. A page always holds at least one entry, so paging progresses.
    """
    if last:
        entries = [e for e in entries if e["digest"] > last]
    if n == 0:
        return [], False
    limit = len(entries) if n is None else min(n, len(entries))
    budget = max_bytes - len(json.dumps(referrers_index([])))
    page: list[dict] = []
    for entry in entries[:limit]:
        budget -= len(json.dumps(entry, separators=(",", ":"))) + 1
        if page and budget < 0:
            break
        page.append(entry)
    return page, len(page) < len(entries)


def referrers_index(entries: list[dict]) -> dict:
    return {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": entries}
