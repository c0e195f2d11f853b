"""The referrers listing for a subject digest.

Entries come from the referrer index written at push time, plus (per the
spec's "Enabling the Referrers API" rule) manifests listed in an existing
OCI 1.0 fallback tag index (``<alg>-<hex>``) whose own ``subject`` is the
requested digest. ``artifact_type`` filters the list. :meth:`ReferrerService.page`
reads entries only as far as one page.
"""

from __future__ import annotations

import json
from typing import Iterator

from ..oci import media_types as mt
from ..oci.digest import Digest
from ..oci.reference import referrers_tag
from . import paths


class ReferrerService:
    def __init__(self, meta, manifests):
        self.meta = meta
        self.manifests = manifests

    def list(self, ns: str, subject: Digest, artifact_type: str | None = None) -> list[dict]:
        """Every referrer of ``subject`` in ``ns``, digest-ordered (for callers that need them all)."""
        return list(self._entries(ns, subject, artifact_type))

    def page(self, ns: str, subject: Digest, artifact_type: str | None, n: int | None, last: str | None,
             max_bytes: int) -> tuple[list[dict], bool]:
        """One page of the digest-ordered listing, and whether more follow.

        ``last`` (a digest) resumes after that entry and ``n`` caps the count, as for tag lists.
        Independently, a page never grows past ``max_bytes`` of JSON (the manifest size limit) so
        that any client that can read a manifest can read it: the spec requires a ``Link`` to the
        rest when the list does not fit in one index. A page always holds at least one entry, so
        paging progresses. Entries are read one at a time and only as far as the page (plus one,
        to know that more follow): a subject with thousands of large referrers costs one page of
        memory, not all of them.
        """
        if n == 0:
            return [], False
        budget = max_bytes - len(json.dumps(referrers_index([])))
        page: list[dict] = []
        for entry in self._entries(ns, subject, artifact_type, after=last):
            if n is not None and len(page) >= n:
                return page, True
            budget -= len(json.dumps(entry, separators=(",", ":"))) + 1
            if page and budget < 0:
                return page, True
            page.append(entry)
        return page, False

    def _entries(self, ns: str, subject: Digest, artifact_type: str | None,
                 after: str | None = None) -> Iterator[dict]:
        """The referrers after digest ``after``, in digest order, each read when it is reached.
        An index entry is named ``<alg>-<hex>`` after its manifest, which sorts as the digest does."""
        base = paths.referrers_dir(ns, subject)
        indexed = {}
        for name in self.meta.children(base):
            alg, sep, hexpart = name.partition("-")
            if sep:
                indexed[f"{alg}:{hexpart}"] = name
        fallback = {e["digest"]: e for e in self._fallback_tag_entries(ns, subject)}
        for digest in sorted(indexed.keys() | fallback.keys()):
            if after and digest <= after:
                continue
            entry = None
            if digest in indexed:
                try:
                    entry = json.loads(self.meta.get(f"{base}/{indexed[digest]}"))
                except Exception:  # noqa: BLE001 - a vanished or corrupt entry is skipped
                    entry = None
            if not isinstance(entry, dict):
                entry = fallback.get(digest)
            if entry is None or artifact_type is not None and entry.get("artifactType") != artifact_type:
                continue
            yield entry

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


def referrers_index(entries: list[dict]) -> dict:
    return {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": entries}
