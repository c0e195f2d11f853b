"""Manifest revisions: push, pull and delete, with tags and referrers kept in step.

A revision file holds one JSON header line (media type, subject, created_at)
followed by the exact bytes the client pushed. On a metadata store that can
presign URLs (S3) the bare body is also kept beside it, so a manifest GET can
be answered with a 307 to the store. Tag updates, immutability and
last-writer-wins run under the ``tag:<ns>:<tag>`` lock; events are emitted
after the commit and only when local state changed.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from ..oci.digest import Digest, is_digest
from ..oci.errors import (Conflict, DigestInvalid, ManifestBlobUnknown, ManifestUnknown, NameUnknown,
                          ReplicationSuperseded, TagInvalid, TooLarge)
from ..oci.manifest import ParsedManifest, parse_manifest
from ..oci.reference import is_valid_tag, validate_tag
from ..storage import NotFound
from . import paths
from .events import ManifestDeleted, ManifestPushed
from .tags import TagRecord, TagStore, immutable, local_wins
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
    def __init__(self, meta, locks, blob_service, listeners, max_manifest_size: int):
        self.meta = meta
        self.locks = locks
        self.blob_service = blob_service
        self.listeners = listeners
        self.max_manifest_size = max_manifest_size
        self.tags = TagStore(meta)
        self.tombstones = TombstoneStore(meta)

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
            extra_tags: list[str] | None = None, source_ts: datetime | None = None) -> PutResult:
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
        if not policy.allow_missing_references:
            self._check_references(ns, parsed)

        author = self._author_time(source_ts)
        if not by_digest:
            # A tag write that will be refused must leave nothing behind: a stranded untagged
            # revision's reference markers would keep its blobs alive forever (scrub
            # --orphan-grants reclaims only unreferenced blobs). A hint read without the lock;
            # _set_tag decides under it.
            self._refuse(ns, reference, self.tags.get(ns, reference), d, author, policy, source_ts is not None,
                         self.tombstones.tag(ns, reference) if source_ts is not None else None)
        created_rev = self._store_revision(ns, d, parsed, body)
        result = PutResult(d, str(parsed.subject.digest) if parsed.subject else None)
        events = []
        for t in tags:
            written = self._set_tag(ns, t, d, author, policy, source_ts is not None)
            if written is not None:
                events.append(ManifestPushed(ns, t, str(d), written.created_at))
            result.tags.append(t)
        if by_digest and created_rev:
            events.append(ManifestPushed(ns, str(d), str(d), format_ts(author)))
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

    def _set_tag(self, ns: str, tag: str, d: Digest, author: datetime, policy: WritePolicy,
                 replicated: bool) -> TagRecord | None:
        """Point ``tag`` at ``d``; returns the record written, or None when nothing changed."""
        with self.locks.lock(f"tag:{ns}:{tag}"):
            try:
                current = self.tags.get(ns, tag)
            except Exception:  # noqa: BLE001 - unreadable prior state: write and report a change (fail open)
                log.exception("cannot read tag %s:%s before writing it", ns, tag)
                current = None
            if current is not None and current.digest == str(d):
                return None  # converged replay or a client re-push: nothing changed
            tomb = self.tombstones.tag(ns, tag) if current is None else None
            self._refuse(ns, tag, current, d, author, policy, replicated, tomb)
            if not replicated:
                author = self._local_write_time(current.created if current is not None else
                                                tomb.deleted if tomb is not None else None)
            record = self.tags.put(ns, tag, str(d), author)
            if tomb is not None:
                self.tombstones.unbury_tag(ns, tag)  # the tag exists again, newer than its delete
            return record

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

    @staticmethod
    def _refuse(ns: str, tag: str, current: TagRecord | None, d: Digest, author: datetime, policy: WritePolicy,
                replicated: bool, tomb: Tombstone | None = None) -> None:
        """Raise when pointing ``tag`` (now ``current``, or deleted as ``tomb``) at ``d`` is not allowed."""
        if current is None:
            if replicated and tomb is not None and tombstone_wins(tomb, author):
                raise ReplicationSuperseded(
                    f"tag {tag} was deleted at {tomb.deleted_at}, later than the replicated write")
            return
        if current.digest == str(d):
            return
        if immutable(tag, policy.immutable_tags, policy.immutable_exclusions):
            raise Conflict(f"tag {tag} is immutable and already points at {current.digest}")
        if replicated and local_wins(current, author, str(d)):
            raise ReplicationSuperseded(
                f"local tag {tag} ({current.digest}, {current.created_at}) is newer than the replicated write")

    # -- deletes

    def delete(self, ns: str, reference: str, source_ts: datetime | None = None) -> None:
        """Delete a tag or a manifest. A replicated delete (``source_ts``) older than the local tag is
        refused as superseded; one that finds nothing to delete still records its tombstone (a
        stale push arriving later from a third node must lose to it) and answers unknown."""
        stamp = self._author_time(source_ts)
        if is_digest(reference):
            self._delete_digest(ns, Digest.parse(reference), source_ts, stamp)
        else:
            self._delete_tag(ns, validate_tag(reference), source_ts, stamp)

    def _delete_tag(self, ns: str, tag: str, source_ts, stamp: datetime) -> None:
        with self.locks.lock(f"tag:{ns}:{tag}"):
            current = self.tags.get(ns, tag)
            if current is None:
                if source_ts is not None:
                    self.tombstones.bury_tag(ns, tag, None, stamp)
                if not self.namespace_exists(ns):
                    raise NameUnknown(f"repository {ns} unknown")
                raise ManifestUnknown(f"tag {ns}:{tag} unknown")
            if source_ts is not None and local_wins(current, stamp, None):
                raise ReplicationSuperseded(f"local tag {tag} is newer than the replicated delete")
            if source_ts is None:
                stamp = self._local_write_time(current.created)
            self.tombstones.bury_tag(ns, tag, current.digest, stamp)
            self.tags.delete(ns, tag)
        self.listeners.emit(ManifestDeleted(ns, tag, current.digest, format_ts(stamp)))

    def _delete_digest(self, ns: str, d: Digest, source_ts, stamp: datetime) -> None:
        rev = self.revision(ns, d)
        if rev is None:
            if not self.namespace_exists(ns):
                raise NameUnknown(f"repository {ns} unknown")
            raise ManifestUnknown(f"manifest {ns}@{d} unknown")
        pointing = self.tags.pointing_to(ns, str(d))
        if source_ts is not None:
            for name, rec in pointing:
                if local_wins(rec, stamp, None):
                    raise ReplicationSuperseded(f"tag {name} pointing at {d} is newer than the replicated delete")
        events = []
        for name, _ in pointing:
            with self.locks.lock(f"tag:{ns}:{name}"):
                rec = self.tags.get(ns, name)
                if rec is not None and rec.digest == str(d):
                    tag_stamp = stamp if source_ts is not None else self._local_write_time(rec.created)
                    self.tombstones.bury_tag(ns, name, rec.digest, tag_stamp)
                    self.tags.delete(ns, name)
                    events.append(ManifestDeleted(ns, name, rec.digest, format_ts(tag_stamp)))
        self.tombstones.bury_digest(ns, d, rev.subject, stamp)
        self._drop_revision(ns, d, rev)
        events.append(ManifestDeleted(ns, str(d), str(d), format_ts(stamp), rev.subject))
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

    def tag_state(self, ns: str, tag: str) -> TagRecord | Tombstone | None:
        """The current state of ``tag``: its record, its tombstone, or None (never written, or
        deleted longer ago than the tombstone horizon)."""
        rec = self.tags.get(ns, tag)
        return rec if rec is not None else self.tombstones.tag(ns, tag)
