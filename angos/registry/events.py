"""Registry events and the listener list.

The registry calls :meth:`Listeners.emit` after a manifest mutation has been
committed and only when it changed local state, and once for every replicated
write it refuses under last-writer-wins (:class:`ReplicatedWriteRefused`, which
changed nothing: the conflict log records it). Listeners (wired in
``create_app``) must not raise into the request: :meth:`emit` logs and counts a
failing listener and carries on, so an enqueue failure never fails a push.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable

log = logging.getLogger("angos.registry.events")


@dataclass(frozen=True)
class ManifestPushed:
    namespace: str
    reference: str          # the tag, or the digest for a by-digest push
    digest: str
    created_at: str         # author time (RFC 3339)


@dataclass(frozen=True)
class ManifestDeleted:
    namespace: str
    reference: str          # the tag or digest the client deleted
    digest: str | None
    deleted_at: str         # change time (RFC 3339), the LWW stamp of the delete
    subject: str | None = None  # the deleted manifest's subject, for referrers fallback upkeep


@dataclass(frozen=True)
class ReplicatedWriteRefused:
    """A replicated write lost last-writer-wins here (answered ``409 REPLICATION_SUPERSEDED``).
    Digests are None for a delete; origins None when unknown (an older peer, an older record)."""
    namespace: str
    tag: str                    # the tag whose state won (for a refused digest delete: a tag at that digest)
    winner_digest: str | None
    winner_author_time: str
    winner_origin: str | None
    loser_digest: str | None
    loser_author_time: str
    loser_origin: str | None
    loser_stored: bool = False  # the refused manifest's revision is stored on this instance


@dataclass(frozen=True)
class TombstoneRecorded:
    """A replicated delete of a tag this instance does not have: nothing was deleted, but the delete
    now stands here (a later, older push loses to it). Replication ignores it; the change feed
    records it."""
    namespace: str
    reference: str          # the tag
    deleted_at: str         # the delete's author time (RFC 3339)


class Listeners:
    def __init__(self):
        self._listeners: list[Callable] = []
        self.failures = 0

    def add(self, fn: Callable) -> None:
        self._listeners.append(fn)

    def emit(self, event) -> None:
        for fn in self._listeners:
            try:
                fn(event)
            except Exception:  # noqa: BLE001 - a listener must never fail the write
                self.failures += 1
                log.exception("event listener %r failed for %r", fn, event)
