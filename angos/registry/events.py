"""Registry events and the listener list.

The registry calls :meth:`Listeners.emit` after a manifest mutation has been
committed and only when it changed local state, and once for every replicated
write it refuses under last-writer-wins (:class:`ReplicatedWriteRefused`, which
changed nothing: the conflict log records it). Listeners (wired in
``create_app``) must not raise into the request: :meth:`emit` logs and counts a
failing listener and carries on, so an enqueue failure never fails a push.

Activities are what event webhooks report (:mod:`angos.events`): one
:class:`Activity` per thing a client (or the registry itself) did, with the
:class:`Actor` the caller names. The registry asks :meth:`Listeners.wants`
before it builds one, so an activity nobody watches (a pull, usually) costs a
set lookup; it passes each activity to :meth:`Listeners.vet` *before* it
performs the operation (a watcher may refuse by raising an OCI error, and the
operation is then not performed) and emits it after the commit like any event.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
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


# What event webhooks report. A manifest push is one ``manifest.push`` plus a ``tag.create`` per tag
# it created or moved; a manifest delete one ``manifest.delete`` plus a ``tag.delete`` per tag that
# went with it; ``blob.push`` is a completed upload or a mount; pulls are GETs (never HEADs).
ACTIVITY_KINDS = ("manifest.push", "manifest.pull", "manifest.delete", "blob.push", "blob.pull", "tag.create",
                  "tag.delete")


@dataclass(frozen=True)
class Actor:
    """Who did it. ``kind`` is ``user`` (an identity, an OIDC token from ``provider`` whose subject is
    ``username``, or a client certificate), ``anonymous``, or ``internal`` for what the registry does
    by itself: ``id`` is then ``replication`` (a write a peer replicated here, authored on ``origin``),
    ``retention`` or ``cache-fill``."""
    kind: str
    id: str | None = None
    username: str | None = None
    client_ip: str | None = None
    origin: str | None = None
    provider: str | None = None

    @classmethod
    def internal(cls, why: str, origin: str | None = None) -> "Actor":
        return cls("internal", why, origin=origin)


RETENTION = Actor.internal("retention")
CACHE_FILL = Actor.internal("cache-fill")


def _utc_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class Activity:
    """One reportable operation. ``id`` is made once, so every receiver (and every retry) sees the same
    one; ``timestamp`` is when the registry was asked (RFC 3339 UTC)."""
    kind: str                   # one of ACTIVITY_KINDS
    namespace: str
    actor: Actor | None
    digest: str | None = None
    reference: str | None = None  # the tag or digest the client named
    tag: str | None = None
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    timestamp: str = field(default_factory=_utc_now)


class Listeners:
    def __init__(self):
        self._listeners: list[Callable] = []
        self._watchers: list = []
        self.failures = 0

    def add(self, fn: Callable) -> None:
        self._listeners.append(fn)

    def watch(self, watcher) -> None:
        """Add an activity watcher: ``watcher.wants(kind) -> bool`` (cheap: asked on every pull),
        ``watcher.vet(activity)`` before the operation (raising refuses it), and ``watcher(event)``
        after, like any listener."""
        self._watchers.append(watcher)
        self._listeners.append(watcher)

    def wants(self, kind: str) -> bool:
        """Whether some watcher reports ``kind`` (False at once when none is wired)."""
        return bool(self._watchers) and any(w.wants(kind) for w in self._watchers)

    def activity(self, kind: str, namespace: str, actor: Actor | None, **fields) -> Activity | None:
        """An :class:`Activity` to vet and emit, or None when no watcher wants ``kind``."""
        if not self.wants(kind):
            return None
        return Activity(kind, namespace, actor, **fields)

    def vet(self, *activities: Activity | None) -> None:
        """Before the operation: each watcher may refuse (its exception propagates to the caller,
        which then performs nothing). None entries (unwatched kinds) are skipped."""
        for act in activities:
            if act is None:
                continue
            for w in self._watchers:
                w.vet(act)

    def emit(self, event) -> None:
        if event is None:
            return  # an activity nobody wants
        for fn in self._listeners:
            try:
                fn(event)
            except Exception:  # noqa: BLE001 - a listener must never fail the write
                self.failures += 1
                log.exception("event listener %r failed for %r", fn, event)
