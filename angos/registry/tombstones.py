"""Tombstones: what a delete leaves behind, so last-writer-wins can compare with it.

A delete removes a tag (or a manifest revision) and records when it happened:

- a tag tombstone ``{"digest": <what the tag pointed at or null>, "deleted_at": <RFC 3339>}``;
- a manifest tombstone ``{"deleted_at": ..., "subject": <digest or null>}``, so a
  replication job that runs after the revision is gone still knows the delete's
  author time and the subject whose referrers fallback tag it must update.

Both may carry ``"origin"``: the instance where the delete was authored (as in
tag records, :mod:`.tags`; absent in tombstones written before origins were kept).

``deleted_at`` is the delete's author time: the receiver's clock for a client
delete, the origin's (``X-Angos-Source-Timestamp``) for a replicated one. A
later write of the same tag or digest removes the tombstone; a tombstone older
than the configured horizon is removed by ``angos scrub --tombstones``.

The ordering rule for one (namespace, tag), the same on every node: states
are ordered by author time; at the identical time a delete beats a push, and
between two pushes the larger digest wins.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

from ..oci.digest import Digest
from ..storage import NotFound
from . import paths
from .timestamps import format_ts, parse_ts


@dataclass(frozen=True)
class Tombstone:
    deleted_at: str
    digest: str | None = None     # tag tombstones: the digest the tag pointed at
    subject: str | None = None    # manifest tombstones: the deleted manifest's subject
    origin: str | None = None     # the instance the delete was authored on (None: unknown)

    @property
    def deleted(self) -> datetime | None:
        return parse_ts(self.deleted_at)


def tombstone_wins(tomb: Tombstone, incoming_ts: datetime) -> bool:
    """True when a replicated push stamped ``incoming_ts`` is older than (or as old as) the delete."""
    deleted = tomb.deleted
    return deleted is not None and deleted >= incoming_ts


class TombstoneStore:
    def __init__(self, meta):
        self.meta = meta

    def _read(self, key: str) -> Tombstone | None:
        try:
            doc = json.loads(self.meta.get(key))
            if parse_ts(doc.get("deleted_at")) is None:
                return None  # unreadable: treated as absent (nothing to compare with)
            origin = doc.get("origin")
            return Tombstone(doc["deleted_at"], doc.get("digest"), doc.get("subject"),
                             origin if isinstance(origin, str) else None)
        except NotFound:
            return None
        except (ValueError, KeyError, TypeError, AttributeError):
            return None

    def _write(self, key: str, tomb: Tombstone) -> Tombstone:
        doc = {"deleted_at": tomb.deleted_at}
        if tomb.digest is not None:
            doc["digest"] = tomb.digest
        if tomb.subject is not None:
            doc["subject"] = tomb.subject
        if tomb.origin is not None:
            doc["origin"] = tomb.origin
        self.meta.put(key, json.dumps(doc, separators=(",", ":")).encode())
        return tomb

    # -- tags (callers hold the tag:<ns>:<tag> lock)

    def tag(self, ns: str, tag: str) -> Tombstone | None:
        return self._read(paths.tag_tombstone(ns, tag))

    def bury_tag(self, ns: str, tag: str, digest: str | None, deleted_at: datetime,
                 origin: str | None = None) -> Tombstone:
        """Record (or move forward) the tombstone of ``tag``; an existing newer one is kept."""
        current = self.tag(ns, tag)
        if current is not None and current.deleted is not None and current.deleted >= deleted_at:
            return current
        return self._write(paths.tag_tombstone(ns, tag), Tombstone(format_ts(deleted_at), digest, None, origin))

    def unbury_tag(self, ns: str, tag: str) -> None:
        self.meta.delete(paths.tag_tombstone(ns, tag))

    def tag_names(self, ns: str) -> list[str]:
        return sorted(self.meta.children(paths.tag_tombstones_dir(ns)))

    # -- manifests

    def digest(self, ns: str, d: Digest) -> Tombstone | None:
        return self._read(paths.digest_tombstone(ns, d))

    def bury_digest(self, ns: str, d: Digest, subject: str | None, deleted_at: datetime,
                    origin: str | None = None) -> Tombstone:
        return self._write(paths.digest_tombstone(ns, d), Tombstone(format_ts(deleted_at), None, subject, origin))

    def unbury_digest(self, ns: str, d: Digest) -> None:
        self.meta.delete(paths.digest_tombstone(ns, d))

    def digests(self, ns: str) -> list[Digest]:
        out = []
        base = paths.digest_tombstones_dir(ns)
        for alg in self.meta.children(base):
            for hexpart in self.meta.children(f"{base}/{alg}"):
                try:
                    out.append(Digest.parse(f"{alg}:{hexpart}"))
                except Exception:  # noqa: BLE001 - stray files are not tombstones
                    continue
        return out
