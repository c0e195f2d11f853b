"""Manifest revisions: push, pull and delete, with tags and referrers kept in step.

A revision file holds one JSON header line (media type, subject, created_at)
followed by the exact bytes the client pushed. On a metadata store that can
presign URLs (S3) the bare body is also kept beside it, so a manifest GET can
be answered with a 307 to the store. Tag updates, immutability and
last-writer-wins run under the ``tag:<ns>:<tag>`` lock; events are emitted
after the commit and only when local state changed, except
:class:`~.events.ReplicatedWriteRefused`, emitted once for each replicated
write refused as superseded (what the conflict log records).

Activities (:class:`~.events.Activity`, for event webhooks) are vetted before
anything is written and emitted after the commit: ``manifest.push`` for every
accepted PUT (a re-push too) plus ``tag.create`` for each tag it creates or
moves; ``manifest.delete`` for every DELETE plus ``tag.delete`` for each tag
that goes with it. Their actor is the caller's, except for replicated writes,
whose actor is internal (``replication``, with the write's origin).

Every tag record and tombstone keeps its write's origin: :attr:`instance_name`
(``global.instance_name``) for a client write, the ``origin`` a replicated write
names (its ``X-Angos-Source-Instance``), or None when it names none.
"""

from __future__ import annotations

import json
import logging
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Callable

from ..oci.digest import Digest, is_digest
from ..oci.errors import (Conflict, DigestInvalid, ManifestBlobUnknown, ManifestInvalid, ManifestUnknown,
                          NameUnknown, ReplicationSuperseded, TagInvalid, TooLarge)
from ..oci.manifest import ParsedManifest, parse_manifest
from ..oci.reference import is_valid_tag, validate_tag
from ..storage import NotFound
from . import paths
from .events import Actor, ManifestDeleted, ManifestPushed, ReplicatedWriteRefused, TombstoneRecorded
from .tags import TagRecord, TagStore, immutable, local_wins, winner_detail
from .timestamps import format_ts, now
from .tombstones import Tombstone, TombstoneStore, tombstone_wins

log = logging.getLogger("angos.registry.manifests")


@dataclass(frozen=True)
class Revision:
    digest: Digest
    media_type: str
    body: bytes
    subject: str | None = None
    created_at: str | None = None  # when this revision was first stored (RFC 3339)


@dataclass
class PutResult:
    digest: Digest
    subject: str | None
    tags: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class WritePolicy:
    """The per-namespace rules a manifest write must respect."""
    immutable_tags: bool = False
    immutable_exclusions: tuple[str, ...] = ()
    allow_missing_references: bool = True
    # May this writer point an immutable tag that was deleted at another digest? Asked only
    # then (the API answers it from the access policy's explicit grants); None: never.
    may_repoint: Callable[[str], bool] | None = None


def encode_revision(media_type: str, subject: str | None, body: bytes) -> bytes:
    header = {"media_type": media_type, "created_at": format_ts(now())}
    if subject:
        header["subject"] = subject
    return json.dumps(header, separators=(",", ":")).encode() + b"\n" + body


def decode_revision(d: Digest, raw: bytes) -> Revision:
    header, _, body = raw.partition(b"\n")
    meta = json.loads(header)
    return Revision(d, meta["media_type"], body, meta.get("subject"), meta.get("created_at"))


class ManifestService:
    def __init__(self, meta, locks, blob_service, listeners, max_manifest_size: int,
                 max_manifest_references: int = 4096):
        self.meta = meta
        self.locks = locks
        self.blob_service = blob_service
        self.listeners = listeners
        self.max_manifest_size = max_manifest_size
        # Each blob and child a manifest lists costs a reference marker (an object) per push.
        self.max_manifest_references = max_manifest_references
        self.tags = TagStore(meta)
        self.tombstones = TombstoneStore(meta)
        self.instance_name: str | None = None  # the origin of client writes (Registry.reconfigure sets it)

    # -- reads

    def revision(self, ns: str, d: Digest) -> Revision | None:
        try:
            return decode_revision(d, self.meta.get(paths.revision(ns, d)))
        except NotFound:
            return None

    def redirect_url(self, ns: str, rev: Revision) -> str | None:
        """A presigned URL serving ``rev``'s exact body with its media type, or None (filesystem)."""
        if not self.meta.supports_presign:
            return None
        return self.meta.presign(paths.manifest_body(ns, rev.digest), rev.media_type)

    def has_revision(self, ns: str, d: Digest) -> bool:
        return self.meta.exists(paths.revision(ns, d))

    def resolve(self, ns: str, reference: str) -> Digest:
        if is_digest(reference):
            return Digest.parse(reference)
        validate_tag(reference)
        rec = self.tags.get(ns, reference)
        if rec is None:
            raise ManifestUnknown(f"manifest {ns}:{reference} unknown")
        return Digest.parse(rec.digest)

    def get(self, ns: str, reference: str) -> Revision:
        d = self.resolve(ns, reference)
        rev = self.revision(ns, d)
        if rev is None:
            raise ManifestUnknown(f"manifest {ns}@{d} unknown")
        return rev

    def namespace_exists(self, ns: str) -> bool:
        base = paths.namespace_dir(ns)
        return bool(self.meta.children(f"{base}/_manifests"))

    # -- writes

    def put(self, ns: str, reference: str, body: bytes, content_type: str | None, policy: WritePolicy,
            extra_tags: list[str] | None = None, source_ts: datetime | None = None,
            origin: str | None = None, actor: Actor | None = None) -> PutResult:
        """``source_ts`` marks a replicated write (its author time) and ``origin`` names the instance it
        was authored on; a client write's origin is this instance. ``actor`` is who asked (reported to
        event webhooks; a replicated write's actor is always the internal ``replication``)."""
        if len(body) > self.max_manifest_size:
            raise TooLarge(f"manifest exceeds the maximum size of {self.max_manifest_size} bytes")
        by_digest = is_digest(reference)
        if by_digest:
            d = Digest.parse(reference)
            actual = Digest.of(body, d.algorithm)
            if actual != d:
                raise DigestInvalid(f"manifest digest {actual} does not match reference {d}")
        else:
            validate_tag(reference)
            d = Digest.of(body, "sha256")
        tags = [] if by_digest else [reference]
        for t in extra_tags or ():
            if not is_valid_tag(t):
                raise TagInvalid(f"invalid tag {t!r}")
            if t not in tags:
                tags.append(t)

        parsed = parse_manifest(body, content_type)
        references = len(parsed.blobs) + len(parsed.children)
        if references > self.max_manifest_references:
            raise ManifestInvalid(f"manifest lists {references} blobs and child manifests; the limit is "
                                  f"{self.max_manifest_references} (global.max_manifest_references)")
        if not policy.allow_missing_references:
            self._check_references(ns, parsed)

        author = self._author_time(source_ts)
        replicated = source_ts is not None
        origin = origin if replicated else self.instance_name
        # A write that will be refused must leave nothing behind, for any of its tags: a
        # stranded untagged revision's reference markers would keep its blobs alive forever
        # (scrub --orphan-grants reclaims only unreferenced blobs), and a refused request must
        # not have written some tags. A hint read without the locks; _set_tags decides under them.
        moving = []
        for t in tags:
            current = self.tags.get(ns, t)
            self._refuse(ns, t, current, d, author, policy, replicated,
                         self.tombstones.tag(ns, t) if current is None else None, origin)
            if current is None or current.digest != str(d):
                moving.append(t)
        if replicated:
            actor = Actor.internal("replication", origin)
        # Vetted before anything is stored: a refusing watcher (a required webhook) leaves no trace.
        pushed = self.listeners.activity("manifest.push", ns, actor, digest=str(d), reference=reference,
                                         tag=None if by_digest else reference)
        creating = {t: self.listeners.activity("tag.create", ns, actor, digest=str(d), reference=reference, tag=t)
                    for t in moving}
        self.listeners.vet(pushed, *creating.values())
        created_rev = self._store_revision(ns, d, parsed, body)
        result = PutResult(d, str(parsed.subject.digest) if parsed.subject else None, list(tags))
        written = self._set_tags(ns, tags, d, author, policy, replicated, origin)
        events = [ManifestPushed(ns, t, str(d), rec.created_at) for t, rec in written]
        if by_digest and created_rev:
            events.append(ManifestPushed(ns, str(d), str(d), format_ts(author)))
        events.append(pushed)
        for t, _ in written:
            # A tag another writer moved between the vet and the lock is reported all the same.
            events.append(creating.get(t) or self.listeners.activity("tag.create", ns, actor, digest=str(d),
                                                                       reference=reference, tag=t))
        for ev in events:
            self.listeners.emit(ev)
        return result

    @staticmethod
    def _author_time(source_ts: datetime | None) -> datetime:
        current = now()
        if source_ts is None or source_ts > current:
            return current  # future-dated replicated writes are clamped to our clock
        return source_ts

    def _check_references(self, ns: str, parsed: ParsedManifest) -> None:
        # A descriptor with ``urls`` is non-distributable: its bytes live at those URLs and
        # are never pushed (image-spec descriptor ``urls``), so it is not required here.
        missing = [str(b.digest) for b in parsed.blobs
                   if not b.urls and not self.blob_service.has_grant(ns, b.digest)]
        missing += [str(c.digest) for c in parsed.children if not self.has_revision(ns, c.digest)]
        if missing:
            raise ManifestBlobUnknown(f"manifest references unknown content: {', '.join(missing)}",
                                      detail={"digests": missing})

    def _store_revision(self, ns: str, d: Digest, parsed: ParsedManifest, body: bytes) -> bool:
        key = paths.revision(ns, d)
        subject = str(parsed.subject.digest) if parsed.subject else None
        if self.meta.supports_presign:
            # The bare body, written before the revision so a revision always has one to
            # redirect to (rewritten on every push, so a lost one heals like the markers).
            self.meta.put(paths.manifest_body(ns, d), body)
        created = self.meta.put_if_absent(key, encode_revision(parsed.media_type, subject, body))
        if created and self.tombstones.digest(ns, d) is not None:
            self.tombstones.unbury_digest(ns, d)  # pushed again: the delete no longer stands
        # Markers and referrer entries are (re)written even for an existing revision,
        # so a crash between the revision and its markers heals on the next push.
        for target in {b.digest for b in parsed.blobs} | {c.digest for c in parsed.children}:
            self.meta.put(paths.ref_marker(ns, target, d), b"")
        if parsed.subject is not None:
            desc = {"mediaType": parsed.media_type, "digest": str(d), "size": len(body)}
            art = parsed.referrer_artifact_type()
            if art:
                desc["artifactType"] = art
            if parsed.annotations:
                desc["annotations"] = parsed.annotations
            self.meta.put(paths.referrer(ns, parsed.subject.digest, d), json.dumps(desc).encode())
        return created

    def _set_tags(self, ns: str, tags: list[str], d: Digest, author: datetime, policy: WritePolicy,
                  replicated: bool, origin: str | None = None) -> list[tuple[str, TagRecord]]:
        """Point every tag in ``tags`` at ``d``, all or none: each is checked under its lock (taken in
        sorted order, so two writers never deadlock) before any is written. Returns the records
        written (a tag already at ``d`` changes nothing and is left out)."""
        with ExitStack() as stack:
            for t in sorted(set(tags)):
                stack.enter_context(self.locks.lock(f"tag:{ns}:{t}"))
            plan = []
            for t in tags:
                try:
                    current = self.tags.get(ns, t)
                except Exception:  # noqa: BLE001 - unreadable prior state: write and report a change (fail open)
                    log.exception("cannot read tag %s:%s before writing it", ns, t)
                    current = None
                if current is not None and current.digest == str(d):
                    continue  # converged replay or a client re-push: nothing changed
                tomb = self.tombstones.tag(ns, t) if current is None else None
                self._refuse(ns, t, current, d, author, policy, replicated, tomb, origin)
                plan.append((t, current, tomb))
            written = []
            for t, current, tomb in plan:
                stamp = author if replicated else self._local_write_time(
                    current.created if current is not None else tomb.deleted if tomb is not None else None)
                written.append((t, self.tags.put(ns, t, str(d), stamp, origin)))
                if tomb is not None:
                    self.tombstones.unbury_tag(ns, t)  # the tag exists again, newer than its delete
            return written

    @staticmethod
    def _local_write_time(previous: datetime | None) -> datetime:
        """A client write's author time, taken under the tag lock and later than the state it
        replaces (a tag's creation or its tombstone's delete): writes that queued on the lock
        (or came through another box with a slower clock) then carry their commit order in
        their timestamps, which is what last-writer-wins compares downstream."""
        stamp = now()
        if previous is not None and stamp <= previous:
            stamp = previous + timedelta(microseconds=1)
        return stamp

    def _refuse(self, ns: str, tag: str, current: TagRecord | None, d: Digest, author: datetime,
                policy: WritePolicy, replicated: bool, tomb: Tombstone | None = None,
                origin: str | None = None) -> None:
        """Raise when pointing ``tag`` (now ``current``, or deleted as ``tomb``) at ``d`` is not allowed."""
        if current is None:
            if tomb is None:
                return
            if (tomb.digest is not None and tomb.digest != str(d)
                    and immutable(tag, policy.immutable_tags, policy.immutable_exclusions)
                    and not (policy.may_repoint is not None and policy.may_repoint(tag))):
                # Deleting an immutable tag does not free its name for other content: the
                # tombstone remembers what it held (for tombstone_horizon).
                raise Conflict(f"tag {tag} is immutable: it was deleted while pointing at {tomb.digest}, and "
                               f"pointing it elsewhere needs the repoint-immutable-tag action")
            if replicated and tombstone_wins(tomb, author):
                raise self._superseded(
                    ns, tag, f"tag {tag} was deleted at {tomb.deleted_at}, later than the replicated write",
                    (None, tomb.deleted_at, tomb.origin), (str(d), format_ts(author), origin))
            return
        if current.digest == str(d):
            return
        if immutable(tag, policy.immutable_tags, policy.immutable_exclusions):
            raise Conflict(f"tag {tag} is immutable and already points at {current.digest}")
        if replicated and local_wins(current, author, str(d)):
            raise self._superseded(
                ns, tag, f"local tag {tag} ({current.digest}, {current.created_at}) is newer than the replicated write",
                (current.digest, current.created_at, current.origin), (str(d), format_ts(author), origin))

    def _superseded(self, ns: str, tag: str, message: str, winner: tuple, loser: tuple) -> ReplicationSuperseded:
        """The refusal of a replicated write, its winner named in the detail; the refusal is emitted
        as :class:`ReplicatedWriteRefused` first. ``winner`` and ``loser`` are (digest or None for a
        delete, author time, origin)."""
        stored = loser[0] is not None and self.has_revision(ns, Digest.parse(loser[0]))
        self.listeners.emit(ReplicatedWriteRefused(ns, tag, *winner, *loser, stored))
        return ReplicationSuperseded(message, detail=winner_detail(tag, *winner))

    # -- deletes

    def delete(self, ns: str, reference: str, source_ts: datetime | None = None, origin: str | None = None,
               actor: Actor | None = None) -> None:
        """Delete a tag or a manifest. A replicated delete (``source_ts``, authored on ``origin``) older
        than the local tag is refused as superseded; one that finds nothing to delete still records its
        tombstone (a stale push arriving later from a third node must lose to it) and answers unknown.
        ``actor`` is who asked (a replicated delete's actor is the internal ``replication``)."""
        stamp = self._author_time(source_ts)
        origin = origin if source_ts is not None else self.instance_name
        if source_ts is not None:
            actor = Actor.internal("replication", origin)
        if is_digest(reference):
            self._delete_digest(ns, Digest.parse(reference), source_ts, stamp, origin, actor)
        else:
            self._delete_tag(ns, validate_tag(reference), source_ts, stamp, origin, actor)

    def _vet_tag_delete(self, ns: str, tag: str, actor: Actor | None):
        """The activities of deleting ``tag``, vetted (outside its lock: a watcher may take seconds)
        when the tag exists now; (None, None) otherwise."""
        if not (self.listeners.wants("manifest.delete") or self.listeners.wants("tag.delete")):
            return None, None
        current = self.tags.get(ns, tag)
        if current is None:
            return None, None
        acts = (self.listeners.activity("manifest.delete", ns, actor, digest=current.digest, reference=tag, tag=tag),
                self.listeners.activity("tag.delete", ns, actor, digest=current.digest, reference=tag, tag=tag))
        self.listeners.vet(*acts)
        return acts

    def _delete_tag(self, ns: str, tag: str, source_ts, stamp: datetime, origin: str | None = None,
                    actor: Actor | None = None) -> None:
        activities = self._vet_tag_delete(ns, tag, actor)
        with self.locks.lock(f"tag:{ns}:{tag}"):
            current = self.tags.get(ns, tag)
            if current is None:
                if source_ts is not None and self.tombstones.bury_tag(ns, tag, None, stamp, origin).deleted == stamp:
                    self.listeners.emit(TombstoneRecorded(ns, tag, format_ts(stamp)))  # a change all the same
                if not self.namespace_exists(ns):
                    raise NameUnknown(f"repository {ns} unknown")
                raise ManifestUnknown(f"tag {ns}:{tag} unknown")
            if source_ts is not None and local_wins(current, stamp, None):
                raise self._superseded(ns, tag, f"local tag {tag} is newer than the replicated delete",
                                       (current.digest, current.created_at, current.origin),
                                       (None, format_ts(stamp), origin))
            if source_ts is None:
                stamp = self._local_write_time(current.created)
            self.tombstones.bury_tag(ns, tag, current.digest, stamp, origin)
            self.tags.delete(ns, tag)
        self.listeners.emit(ManifestDeleted(ns, tag, current.digest, format_ts(stamp)))
        for act in activities:
            self.listeners.emit(act)

    def _delete_digest(self, ns: str, d: Digest, source_ts, stamp: datetime, origin: str | None = None,
                       actor: Actor | None = None) -> None:
        rev = self.revision(ns, d)
        if rev is None:
            if not self.namespace_exists(ns):
                raise NameUnknown(f"repository {ns} unknown")
            raise ManifestUnknown(f"manifest {ns}@{d} unknown")
        pointing = self.tags.pointing_to(ns, str(d))
        if source_ts is not None:
            for name, rec in pointing:
                if local_wins(rec, stamp, None):
                    raise self._superseded(ns, name, f"tag {name} pointing at {d} is newer than the replicated delete",
                                           (rec.digest, rec.created_at, rec.origin), (None, format_ts(stamp), origin))
        deleted = self.listeners.activity("manifest.delete", ns, actor, digest=str(d), reference=str(d))
        untagging = {name: self.listeners.activity("tag.delete", ns, actor, digest=str(d), reference=str(d), tag=name)
                     for name, _ in pointing}
        self.listeners.vet(deleted, *untagging.values())
        events, untagged = [], []
        for name, _ in pointing:
            with self.locks.lock(f"tag:{ns}:{name}"):
                rec = self.tags.get(ns, name)
                if rec is not None and rec.digest == str(d):
                    tag_stamp = stamp if source_ts is not None else self._local_write_time(rec.created)
                    self.tombstones.bury_tag(ns, name, rec.digest, tag_stamp, origin)
                    self.tags.delete(ns, name)
                    events.append(ManifestDeleted(ns, name, rec.digest, format_ts(tag_stamp)))
                    untagged.append(untagging.get(name))
        self.tombstones.bury_digest(ns, d, rev.subject, stamp, origin)
        self._drop_revision(ns, d, rev)
        events.append(ManifestDeleted(ns, str(d), str(d), format_ts(stamp), rev.subject))
        events += [deleted, *untagged]  # the operation, then the tags that went with it (as vetted)
        for ev in events:
            self.listeners.emit(ev)

    def _drop_revision(self, ns: str, d: Digest, rev: Revision) -> None:
        try:
            parsed = parse_manifest(rev.body, rev.media_type)
            targets = {b.digest for b in parsed.blobs} | {c.digest for c in parsed.children}
        except Exception:  # noqa: BLE001 - a stored revision always parsed once; be lenient on delete
            targets = set()
        self.meta.delete(paths.revision(ns, d))
        if self.meta.supports_presign:
            self.meta.delete(paths.manifest_body(ns, d))
        for target in targets:
            self.meta.delete(paths.ref_marker(ns, target, d))
        if rev.subject:
            self.meta.delete(paths.referrer(ns, Digest.parse(rev.subject), d))
        self.meta.delete(paths.pull_time(ns, d))

    # -- listings

    def list_tags(self, ns: str) -> list[str]:
        names = self.tags.names(ns)
        if not names and not self.namespace_exists(ns):
            raise NameUnknown(f"repository {ns} unknown")
        return names

    def list_revisions(self, ns: str) -> list[Digest]:
        out = []
        base = paths.revisions_dir(ns)
        for alg in self.meta.children(base):
            for hexpart in self.meta.children(f"{base}/{alg}"):
                try:
                    out.append(Digest.parse(f"{alg}:{hexpart}"))
                except Exception:  # noqa: BLE001 - stray files are not revisions
                    continue
        return out

    def tag_record(self, ns: str, tag: str) -> TagRecord | None:
        return self.tags.get(ns, tag)

    def rewrite_media_type(self, ns: str, d: Digest, media_type: str) -> bool:
        """Record ``media_type`` for revision ``d`` (its body, subject and creation time unchanged);
        False when the revision is gone. For scrub's repair of a type that cannot be served."""
        key = paths.revision(ns, d)
        try:
            header, _, body = self.meta.get(key).partition(b"\n")
        except NotFound:
            return False
        meta = json.loads(header)
        meta["media_type"] = media_type
        self.meta.put(key, json.dumps(meta, separators=(",", ":")).encode() + b"\n" + body)
        return True

    def tag_state(self, ns: str, tag: str) -> TagRecord | Tombstone | None:
        """The current state of ``tag``: its record, its tombstone, or None (never written, or
        deleted longer ago than the tombstone horizon)."""
        rec = self.tags.get(ns, tag)
        return rec if rec is not None else self.tombstones.tag(ns, tag)
