"""Tag records and the last-writer-wins rule for replicated writes.

A tag record is ``{"digest": "<alg>:<hex>", "created_at": "<RFC 3339>", "origin": "<instance>"}``;
``created_at`` is the author time of the write that set it (the receiver's
clock for client writes, the origin's for replicated ones) and ``origin`` the
instance that accepted that write from its client (``global.instance_name``;
for a replicated write, what its ``X-Angos-Source-Instance`` header said).
Records written before origins were kept have none (``origin`` None).

LWW (only when a write carries a source timestamp): the local tag wins when
its ``created_at`` is strictly newer; equal times with different digests are
broken by the larger digest string so every node picks the same winner.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime

from ..storage import NotFound
from . import paths
from .timestamps import format_ts, parse_ts


@dataclass(frozen=True)
class TagRecord:
    digest: str
    created_at: str
    origin: str | None = None

    @property
    def created(self) -> datetime | None:
        return parse_ts(self.created_at)


class TagStore:
    def __init__(self, meta):
        self.meta = meta

    def get(self, ns: str, tag: str) -> TagRecord | None:
        try:
            doc = json.loads(self.meta.get(paths.tag(ns, tag)))
            origin = doc.get("origin")
            return TagRecord(doc["digest"], doc.get("created_at") or "", origin if isinstance(origin, str) else None)
        except NotFound:
            return None
        except (ValueError, KeyError, TypeError):
            return None  # a corrupt record reads as absent; scrub --tags repairs it

    def put(self, ns: str, tag: str, digest: str, created_at: datetime, origin: str | None = None) -> TagRecord:
        record = TagRecord(digest, format_ts(created_at), origin)
        doc = {"digest": digest, "created_at": record.created_at}
        if origin is not None:
            doc["origin"] = origin
        self.meta.put(paths.tag(ns, tag), json.dumps(doc).encode())
        return record

    def delete(self, ns: str, tag: str) -> None:
        self.meta.delete(paths.tag(ns, tag))

    def names(self, ns: str) -> list[str]:
        return sorted(self.meta.children(paths.tags_dir(ns)))

    def pointing_to(self, ns: str, digest: str) -> list[tuple[str, TagRecord]]:
        out = []
        for name in self.names(ns):
            rec = self.get(ns, name)
            if rec is not None and rec.digest == digest:
                out.append((name, rec))
        return out


def local_wins(local: TagRecord, incoming_ts: datetime, incoming_digest: str | None) -> bool:
    """True when a replicated write stamped ``incoming_ts`` must be rejected as superseded."""
    local_ts = local.created
    if local_ts is None:
        return False
    if local_ts > incoming_ts:
        return True
    if local_ts == incoming_ts and incoming_digest is not None and local.digest != incoming_digest:
        return local.digest > incoming_digest
    return False


def winner_detail(tag: str, digest: str | None, author_time: str, origin: str | None = None) -> dict:
    """The ``detail`` of a ``REPLICATION_SUPERSEDED`` refusal: the state that won, so the sender can
    say what the downstream holds and record the conflict. ``digest`` is None when the winner is a
    delete; ``origin`` None when the winning record predates origins."""
    return {"tag": tag, "digest": digest, "author_time": author_time, "origin": origin}


def immutable(tag: str, enabled: bool, exclusions: tuple[str, ...]) -> bool:
    """Exclusions are regex *searches*, so anchors mean what they say: ``^dev-`` excludes
    every tag starting with ``dev-``, ``^latest$`` exactly ``latest``."""
    if not enabled:
        return False
    return not any(re.search(p, tag) for p in exclusions)
