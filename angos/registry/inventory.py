"""What the registry holds, summarised for the ``/_ext/`` listings (SPEC 12).

Read-only views built from stored state on each call (nothing is cached, so a
listing never disagrees with what ``/v2/`` serves):

- :meth:`Inventory.repositories`: every configured repository with the number
  of namespaces stored under it and its features (pull-through, immutable tags);
- :meth:`Inventory.namespaces`: the namespaces of one repository with their
  manifest and in-progress upload counts;
- :meth:`Inventory.revisions`: every manifest revision of a namespace with its
  media type, tags, the index that lists it (``parent``), push time and last
  pull time (when ``update_pull_time`` records them);
- :meth:`Inventory.uploads`: the upload sessions of a namespace;
- :meth:`Inventory.tag_states`: every tag's last-writer-wins state (digest and
  author time, or its tombstone), RFC 3339 times kept exact for comparison;
  :meth:`Inventory.tag_states_of` the same for named tags only.

Times are Unix seconds (integers), ``None`` when unknown. A revision whose
stored record cannot be read is listed with what is known (``media_type``
``None``) rather than failing the listing: scrub reports and repairs those.
"""

from __future__ import annotations

from ..oci.errors import NameUnknown
from ..oci.manifest import parse_manifest
from ..oci.reference import validate_tag
from .manifests import Revision
from .tags import TagRecord
from .timestamps import parse_ts


def _unix(value: str | None) -> int | None:
    ts = parse_ts(value)
    return int(ts.timestamp()) if ts is not None else None


class Inventory:
    def __init__(self, registry):
        self.reg = registry

    # -- repositories and namespaces

    def _namespaces_of(self, key: str) -> list[str]:
        return [ns for ns in self.reg.catalog.namespaces() if self.reg.cfg.repository_for(ns)[0] == key]

    def repositories(self) -> list[dict]:
        cfg = self.reg.cfg
        by_repo: dict[str, int] = {}
        for ns in self.reg.catalog.namespaces():
            key = cfg.repository_for(ns)[0]
            if key is not None:
                by_repo[key] = by_repo.get(key, 0) + 1
        out = []
        for key in sorted(cfg.repository):
            repo = cfg.repository[key]
            out.append({"name": key, "namespaces": by_repo.get(key, 0), "is_pull_through": bool(repo.upstream),
                        "immutable_tags": bool(cfg.global_.immutable_tags or repo.immutable_tags)})
        return out

    def namespaces(self, key: str) -> list[dict]:
        """The namespaces of configured repository ``key``; NAME_UNKNOWN for any other key."""
        if key not in self.reg.cfg.repository:
            raise NameUnknown(f"repository {key} is not configured")
        sessions = self._sessions()
        out = []
        for ns in self._namespaces_of(key):
            out.append({"name": ns, "manifests": len(self.reg.manifests.list_revisions(ns)),
                        "uploads": sum(1 for _, info in sessions if info.get("namespace") == ns)})
        return out

    # -- revisions

    def revisions(self, ns: str) -> list[dict]:
        manifests = self.reg.manifests
        tags: dict[str, list[str]] = {}
        for name in manifests.tags.names(ns):
            rec = manifests.tags.get(ns, name)
            if rec is not None:
                tags.setdefault(rec.digest, []).append(name)
        # One manifest body at a time: each row keeps only what the listing shows (a namespace's
        # manifests together may be far larger than the one max_manifest_size a request may hold).
        rows, parents = [], {}
        for d in sorted(manifests.list_revisions(ns), key=str):
            try:
                rev = manifests.revision(ns, d)  # None: deleted while listing
            except (ValueError, KeyError, TypeError):
                rev = Revision(d, None, b"")  # unreadable record: listed with what is known
            rows.append((d, rev.media_type if rev else None, _unix(rev.created_at) if rev else None))
            if rev is not None and rev.media_type is not None:
                try:
                    parsed = parse_manifest(rev.body, rev.media_type)
                except Exception:  # noqa: BLE001 - an unparsable stored manifest lists no children
                    continue
                for child in parsed.children:
                    parents.setdefault(str(child.digest), str(d))
        out = []
        for d, media_type, pushed_at in rows:
            key = str(d)
            pulled = self.reg.last_pull(ns, d)
            out.append({"digest": key, "media_type": media_type,
                        "tags": sorted(tags.get(key, [])), "parent": parents.get(key),
                        "pushed_at": pushed_at,
                        "last_pulled_at": int(pulled.timestamp()) if pulled is not None else None})
        return out

    # -- uploads

    def _sessions(self) -> list[tuple[str, dict]]:
        uploads = self.reg.uploads
        # Finished or cancelled while listing (None), or not a record: skipped.
        return [(u, info) for u in uploads.list_sessions() if isinstance(info := uploads.session_info(u), dict)]

    def uploads(self, ns: str) -> list[dict]:
        out = []
        for upload_id, info in self._sessions():
            if info.get("namespace") != ns:
                continue
            try:
                size = self.reg.uploads.offset(upload_id)
            except Exception:  # noqa: BLE001 - completed or cancelled while listing
                continue
            out.append({"uuid": upload_id, "size": size, "started_at": _unix(info.get("started_at"))})
        return sorted(out, key=lambda u: (u["started_at"] or 0, u["uuid"]))

    # -- tag states (replication reconcile)

    def tag_states(self, ns: str) -> dict[str, dict]:
        """``{tag: {name, digest, created_at} | {name, deleted_at}}`` for every tag and tombstone of ``ns``."""
        manifests = self.reg.manifests
        out: dict[str, dict] = {}
        for name in manifests.tombstones.tag_names(ns):
            tomb = manifests.tombstones.tag(ns, name)
            if tomb is not None:
                out[name] = {"name": name, "deleted_at": tomb.deleted_at}
        for name in manifests.tags.names(ns):
            rec = manifests.tags.get(ns, name)
            if rec is not None:  # a live tag wins over a tombstone left by a crash between the two writes
                out[name] = {"name": name, "digest": rec.digest, "created_at": rec.created_at}
        return out

    def tag_states_of(self, ns: str, names: list[str]) -> list[dict]:
        """The states of the tags ``names`` (each validated; TAG_INVALID otherwise), in that order,
        without the ones that have none. Reads only those tags, whatever the namespace holds."""
        out, seen = [], set()
        for name in names:
            validate_tag(name)
            if name in seen:
                continue
            seen.add(name)
            state = self.reg.manifests.tag_state(ns, name)
            if isinstance(state, TagRecord):
                out.append({"name": name, "digest": state.digest, "created_at": state.created_at})
            elif state is not None:
                out.append({"name": name, "deleted_at": state.deleted_at})
        return out
