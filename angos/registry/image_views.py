"""Read-only views of stored images for the web UI: a page of tags, the untagged manifests, and
one manifest's details (config, layers, parents, referrers, files).

Contract, and what each costs (the UI's pages must not grow with what the registry holds):

- :meth:`ImageViews.tag_names` lists a namespace's tag names (one directory listing, no reads).
  It grows with the namespace, as any listing of names does; nothing else here does.
- :meth:`ImageViews.tag_rows` reads, for the tags it is given only, each tag's record and, once
  per distinct digest, :meth:`summary`: the revision, its pull time, its referrers (the index
  written at push time, :mod:`.referrers`, never a scan; the first :data:`ROW_REFERRERS` of
  them), and an image's config blob or an index's children's revisions. A page of 100 tags
  costs the same in a namespace of 100 or of 100,000 tags.
- :meth:`ImageViews.untagged` walks the namespace's revisions in digest order and stops at
  ``limit`` rows: manifests no tag names, leaving out an index's children (a reference marker
  names their parent) and referrers whose subject is stored (they show on their subject).
- :meth:`ImageViews.details` is one manifest's page: every field of the manifest, its config
  (parsed), layers with the total, the indexes that list it, its referrers with their artifact
  types, its files (title annotations) and the tags pointing at it (there is no digest→tags
  index: the tag records are read, up to a limit the caller gives).

A config blob is read only when its descriptor says it is an image config of at most
:data:`CONFIG_LIMIT` bytes, and never more than that many bytes are read from storage: a client
controls both the blob and its descriptor. Anything unreadable (a vanished revision, a blob that
is not JSON) is reported as unknown rather than failing the page; scrub repairs stores.

Times are Unix seconds (int) or None. Nothing here is cached between calls; one
:class:`ImageViews` per request memoises what it read so far (a digest many tags share is read
once).
"""

from __future__ import annotations

import json
from typing import NamedTuple

from ..oci.digest import Digest
from ..oci.manifest import ParsedManifest, parse_manifest
from . import paths
from .timestamps import parse_ts

CONFIG_LIMIT = 1 << 20  # bytes of a config blob the UI parses; bigger ones are described, not read
IMAGE_CONFIGS = frozenset({"application/vnd.oci.image.config.v1+json",
                           "application/vnd.docker.container.image.v1+json"})
TITLE = "org.opencontainers.image.title"
ROW_REFERRERS = 10  # referrer badges a table row reads and shows; its manifest page lists them all
# buildx stores provenance/SBOM attestations as index children with platform unknown/unknown.
REFERENCE_TYPE = "vnd.docker.reference.type"


def _unix(value: str | None) -> int | None:
    ts = parse_ts(value)
    return int(ts.timestamp()) if ts is not None else None


def platform_name(platform) -> str | None:
    """``os/architecture[/variant]`` of an OCI platform object, None when it names none."""
    if not isinstance(platform, dict):
        return None
    os_, arch = platform.get("os"), platform.get("architecture")
    if not isinstance(os_, str) or not isinstance(arch, str) or not os_ or not arch:
        return None
    variant = platform.get("variant")
    return f"{os_}/{arch}/{variant}" if isinstance(variant, str) and variant else f"{os_}/{arch}"


def _str_list(value) -> list[str] | None:
    return [str(v) for v in value] if isinstance(value, list) else None


def _str_map(value) -> dict[str, str]:
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}


class _Facts(NamedTuple):
    """What the pages show of a stored revision, without its body."""
    digest: Digest
    media_type: str
    subject: str | None
    created_at: str | None
    size: int


class ImageViews:
    """The UI's read model of one request (see the module docstring)."""

    def __init__(self, registry):
        self.reg = registry
        self.meta = registry.meta_store
        self._parsed: dict[tuple[str, str], tuple | None] = {}
        self._summaries: dict[tuple[str, str], dict] = {}
        self._configs: dict[tuple[str, str], dict | None] = {}

    # -- reading one revision

    def _revision(self, ns: str, digest: str):
        """``(revision, parsed manifest or None)``, or None when no such revision is stored."""
        key = (ns, digest)
        if key not in self._parsed:
            try:
                d = Digest.parse(digest)
                rev = self.reg.manifests.revision(ns, d)
            except (ValueError, KeyError, TypeError):
                rev = None  # a malformed digest or an unreadable record: nothing to show
            parsed = None
            if rev is not None:
                try:
                    parsed = parse_manifest(rev.body, rev.media_type)
                except Exception:  # noqa: BLE001 - an unparsable stored manifest is shown as raw facts only
                    parsed = None
            # Kept for the whole request: the facts a page shows, never the body (a page may touch
            # many manifests, and their bodies together could be far larger than one).
            self._parsed[key] = (_Facts(rev.digest, rev.media_type, rev.subject, rev.created_at, len(rev.body)),
                                 parsed) if rev is not None else None
        return self._parsed[key]

    def config(self, ns: str, desc) -> dict | None:
        """The image config ``desc`` names, parsed, when it is small and stored; else None."""
        key = (ns, str(desc.digest))  # the grant is per namespace
        if key in self._configs:
            return self._configs[key]
        doc = None
        if desc.media_type in IMAGE_CONFIGS and 0 <= desc.size <= CONFIG_LIMIT and self.reg.blobs.has_grant(
                ns, desc.digest):
            try:
                fh = self.reg.blobs.open(ns, desc.digest)
                try:
                    raw = fh.read(CONFIG_LIMIT + 1)  # the descriptor's size is the client's word
                finally:
                    fh.close()
                if len(raw) <= CONFIG_LIMIT:
                    doc = json.loads(raw)
            except Exception:  # noqa: BLE001 - missing, unreadable or not JSON: no config facts
                doc = None
        self._configs[key] = doc if isinstance(doc, dict) else None
        return self._configs[key]

    @staticmethod
    def kind(parsed: ParsedManifest | None) -> str:
        """``index``, ``image``, ``artifact`` (an artifactType, or a config that is not an image's)
        or ``unknown`` (the stored manifest does not parse)."""
        if parsed is None:
            return "unknown"
        if parsed.is_index:
            return "index"
        if parsed.artifact_type or parsed.config_media_type not in IMAGE_CONFIGS:
            return "artifact"
        return "image"

    def _size(self, ns: str, digest: str) -> int | None:
        """Bytes of a manifest and everything it lists, each blob counted once."""
        found = self._revision(ns, digest)
        if found is None:
            return None
        rev, parsed = found
        if parsed is None:
            return rev.size
        total, seen = rev.size, set()
        for b in parsed.blobs:
            if str(b.digest) not in seen:
                seen.add(str(b.digest))
                total += max(b.size, 0)
        for c in parsed.children:
            if str(c.digest) in seen:
                continue
            seen.add(str(c.digest))
            child = self._revision(ns, str(c.digest))
            child_parsed = child[1] if child is not None else None
            total += max(c.size, 0)
            for b in child_parsed.blobs if child_parsed is not None else ():
                if str(b.digest) not in seen:
                    seen.add(str(b.digest))
                    total += max(b.size, 0)
        return total

    def children(self, ns: str, parsed: ParsedManifest | None) -> list[dict]:
        out = []
        for c in parsed.children if parsed is not None else ():
            ann = c.annotations or {}
            attestation = ann.get(REFERENCE_TYPE) == "attestation-manifest"
            out.append({"digest": str(c.digest), "media_type": c.media_type, "platform": platform_name(c.platform),
                        "attestation": attestation, "stored": self._revision(ns, str(c.digest)) is not None,
                        "size": self._size(ns, str(c.digest))})
        return out

    def referrers(self, ns: str, digest: str, limit: int | None = None) -> tuple[list[dict], int]:
        """The manifests whose ``subject`` is ``digest`` (the referrers index), artifact type first,
        and how many there are. With ``limit``, a subject with more index entries than that has only
        its first ``limit`` entries read (a build may attach hundreds of attestations)."""
        try:
            d = Digest.parse(digest)
            names = self.meta.children(paths.referrers_dir(ns, d)) if limit is not None else []
            if limit is not None and len(names) > limit:
                entries = []
                for name in names[:limit]:
                    try:
                        entries.append(json.loads(self.meta.get(f"{paths.referrers_dir(ns, d)}/{name}")))
                    except Exception:  # noqa: BLE001 - vanished or corrupt: skipped, as the listing does
                        continue
                total = len(names)
            else:
                entries = self.reg.referrers.list(ns, d)
                total = len(entries)
        except Exception:  # noqa: BLE001 - an unreadable index lists no referrers rather than failing the page
            return [], 0
        out = []
        for e in entries:
            if not isinstance(e, dict):
                continue
            art = e.get("artifactType")
            out.append({"digest": str(e.get("digest")), "artifact_type": art if isinstance(art, str) else None,
                        "media_type": e.get("mediaType"), "size": e.get("size"),
                        "annotations": _str_map(e.get("annotations"))})
        return sorted(out, key=lambda r: (r["artifact_type"] or "", r["digest"])), total

    def summary(self, ns: str, digest: str) -> dict:
        """One manifest as a table row shows it: kind, platforms, total size, times, referrers,
        an index's children."""
        key = (ns, digest)
        if key in self._summaries:
            return self._summaries[key]
        found = self._revision(ns, digest)
        row: dict = {"digest": digest, "stored": found is not None, "kind": "unknown", "media_type": None,
                     "artifact_type": None, "platforms": [], "children": [], "size": None,
                     "pushed_at": None, "last_pulled_at": None, "referrers": [], "referrer_count": 0,
                     "subject": None}
        if found is not None:
            rev, parsed = found
            kind = self.kind(parsed)
            row.update(kind=kind, media_type=rev.media_type, pushed_at=_unix(rev.created_at),
                       size=self._size(ns, digest), subject=rev.subject,
                       artifact_type=parsed.referrer_artifact_type() if parsed is not None and kind == "artifact"
                       else None)
            pulled = self.reg.last_pull(ns, rev.digest)
            row["last_pulled_at"] = int(pulled.timestamp()) if pulled is not None else None
            if kind == "index":
                row["children"] = self.children(ns, parsed)
                row["platforms"] = [c["platform"] for c in row["children"] if c["platform"] and not c["attestation"]]
            elif kind == "image":
                cfg = self.config(ns, parsed.blobs[0])
                name = platform_name(cfg) if cfg is not None else None
                row["platforms"] = [name] if name else []
            row["referrers"], row["referrer_count"] = self.referrers(ns, digest, ROW_REFERRERS)
        self._summaries[key] = row
        return row

    # -- a namespace's listings

    def tag_names(self, ns: str, q: str | None = None) -> list[str]:
        """Every tag of ``ns`` (sorted), or those containing ``q`` (case-insensitive)."""
        names = self.reg.manifests.tags.names(ns)
        if q:
            needle = q.lower()
            names = [n for n in names if needle in n.lower()]
        return names

    def tag_rows(self, ns: str, names: list[str]) -> list[dict]:
        """A row per tag of ``names`` that still exists: ``tag``, ``tagged_at`` and its digest's
        :meth:`summary`."""
        out = []
        for name in names:
            rec = self.reg.manifests.tags.get(ns, name)
            if rec is None:
                continue  # deleted since listed
            out.append({**self.summary(ns, rec.digest), "tag": name, "tagged_at": _unix(rec.created_at)})
        return out

    def tagged_digests(self, ns: str) -> set[str]:
        """The digests any tag of ``ns`` names (reads every tag record: for the untagged listing)."""
        out = set()
        for name in self.reg.manifests.tags.names(ns):
            rec = self.reg.manifests.tags.get(ns, name)
            if rec is not None:
                out.add(rec.digest)
        return out

    def parents(self, ns: str, digest: str) -> list[dict]:
        """The stored indexes that list ``digest`` as a child, each with the platform it gives it."""
        try:
            d = Digest.parse(digest)
        except (ValueError, TypeError):
            return []
        out = []
        for name in self.meta.children(paths.ref_dir(ns, d)):
            alg, _, hexpart = name.partition("-")
            found = self._revision(ns, f"{alg}:{hexpart}")
            if found is None or found[1] is None:
                continue
            for c in found[1].children:
                if str(c.digest) == digest:
                    out.append({"digest": str(found[0].digest), "platform": platform_name(c.platform)})
                    break
        return sorted(out, key=lambda p: p["digest"])

    def untagged(self, ns: str, tagged: set[str], after: str | None, limit: int) -> tuple[list[dict], str | None]:
        """Up to ``limit`` untagged manifests after digest ``after`` (see the module docstring), and
        the digest to continue after when more may follow (else None)."""
        digests = sorted(str(d) for d in self.reg.manifests.list_revisions(ns))
        out: list[dict] = []
        for digest in digests:
            if after and digest <= after:
                continue
            if len(out) == limit:
                return out, out[-1]["digest"]
            if digest in tagged or self.meta.children(paths.ref_dir(ns, Digest.parse(digest))):
                continue  # tagged, or listed by an index (shown under it)
            row = self.summary(ns, digest)
            if row["subject"] and self._revision(ns, row["subject"]) is not None:
                continue  # a referrer: a badge on its subject
            out.append(row)
        return out, None

    # -- one manifest

    def tags_of(self, ns: str, digest: str, limit: int | None = None) -> tuple[list[str], bool]:
        """The tags naming ``digest``, and whether that is all of them: with ``limit``, only the
        first ``limit`` tag records (by name) are read, since no index maps digests to tags and a
        namespace may hold 100,000 tags (each a request on S3)."""
        names = self.reg.manifests.tags.names(ns)
        complete = limit is None or len(names) <= limit
        out = []
        for name in names if complete else names[:limit]:
            rec = self.reg.manifests.tags.get(ns, name)
            if rec is not None and rec.digest == digest:
                out.append(name)
        return out, complete

    def details(self, ns: str, digest: str, tag_limit: int | None = None) -> dict | None:
        """Everything the manifest page shows; None when ``digest`` is not stored in ``ns``.
        ``tag_limit`` bounds the tag records read (:meth:`tags_of`)."""
        found = self._revision(ns, digest)
        if found is None:
            return None
        rev, parsed = found
        row = self.summary(ns, digest)
        tags, complete = self.tags_of(ns, digest, tag_limit)
        referrers, count = self.referrers(ns, digest)
        doc = {**row, "referrers": referrers, "referrer_count": count, "manifest_size": rev.size,
               "annotations": {}, "config": None, "layers": [], "layers_total": 0, "files": [],
               "parents": self.parents(ns, digest), "tags": tags, "tags_complete": complete}
        if parsed is None:
            return doc
        doc["annotations"] = _str_map(parsed.annotations)
        doc["artifact_type"] = parsed.artifact_type or row["artifact_type"]
        if not parsed.is_index and parsed.blobs:
            cfg_desc, layers = parsed.blobs[0], parsed.blobs[1:]
            doc["config"] = self._config_facts(ns, cfg_desc)
            doc["layers"] = [{"digest": str(b.digest), "media_type": b.media_type, "size": b.size,
                              "title": (b.annotations or {}).get(TITLE),
                              "stored": self.reg.blobs.has_grant(ns, b.digest)}
                             for b in layers]
            doc["layers_total"] = sum(max(b.size, 0) for b in layers)
            if row["kind"] == "artifact":
                doc["files"] = [layer for layer in doc["layers"] if layer["title"]]
        return doc

    def _config_facts(self, ns: str, desc) -> dict:
        facts = {"digest": str(desc.digest), "media_type": desc.media_type, "size": desc.size, "parsed": False,
                 "platform": None, "created": None, "entrypoint": None, "cmd": None, "env": [], "labels": {},
                 "working_dir": None, "user": None, "too_large": desc.size > CONFIG_LIMIT}
        cfg = self.config(ns, desc)
        if cfg is None:
            return facts
        inner = cfg.get("config") if isinstance(cfg.get("config"), dict) else {}
        env = inner.get("Env") if isinstance(inner.get("Env"), list) else []
        created = cfg.get("created")
        facts.update(parsed=True, platform=platform_name(cfg),
                     created=_unix(created) if isinstance(created, str) else None,
                     entrypoint=_str_list(inner.get("Entrypoint")), cmd=_str_list(inner.get("Cmd")),
                     # Names only: values are often secrets baked into an image by mistake.
                     env=sorted({str(e).partition("=")[0] for e in env}), labels=_str_map(inner.get("Labels")),
                     working_dir=inner.get("WorkingDir") if isinstance(inner.get("WorkingDir"), str) else None,
                     user=inner.get("User") if isinstance(inner.get("User"), str) else None)
        return facts
