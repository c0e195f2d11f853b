"""Blob upload sessions: start, append chunks, report status, complete, cancel.

Bytes stream straight into the blob store's upload object while being hashed,
so an upload of any size runs in constant memory and is hashed in the same
pass. The running hash is kept per process (keyed by upload id and offset);
when a later request lands on another process the bytes written so far are
re-hashed from the store, so correctness never depends on request routing.

Completion moves the upload object to its content-addressed key under the
``blob:<digest>`` lock and grants the blob to the namespace. A crash before the
move leaves only the upload session (cleaned by ``scrub --uploads``), never a
partial blob.

A completed upload is the ``blob.push`` activity (event webhooks): vetted once
the digest checks out and before the blob becomes visible (a refusal leaves
the session as it was before the closing request), emitted after. A
pull-through cache's fill completes its session unreported.

Sessions are bounded (:mod:`.upload_limits`): a namespace has at most
``max_upload_sessions_per_namespace`` open (429 beyond), and a session idle
for ``upload_session_idle_timeout`` answers ``BLOB_UPLOAD_UNKNOWN`` to its
next GET, PATCH or PUT, which also removes it. Checking idleness reuses the
stat of the session's bytes a GET already made; a PATCH or PUT pays one
extra stat (a HEAD on S3).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
from collections import OrderedDict
from typing import Callable, Iterable, Iterator

from ..oci.digest import Digest, check_algorithm
from ..oci.errors import (BlobUploadUnknown, DigestInvalid, RangeInvalid,
                          SizeInvalid, TooLarge)
from ..storage import NotFound
from . import paths
from .events import Actor, Listeners
from .hashing import overlapped
from .timestamps import format_ts, now
from .upload_limits import SessionLimits, new_upload_id

_UPLOAD_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def validate_upload_id(upload_id: str) -> str:
    if not _UPLOAD_ID.fullmatch(upload_id or ""):
        raise BlobUploadUnknown(f"upload {upload_id!r} unknown")
    return upload_id


class UploadService:
    HASH_CACHE = 1024

    def __init__(self, blobs, meta, locks, blob_service, max_blob_size: int, max_sessions: int = 1000,
                 idle_timeout: float = 3600.0, listeners: Listeners | None = None):
        self.listeners = listeners if listeners is not None else Listeners()
        self.blobs = blobs
        self.meta = meta
        self.locks = locks
        self.blob_service = blob_service
        self.max_blob_size = max_blob_size
        self.limits = SessionLimits(blobs, locks, max_sessions, idle_timeout)
        self._hashers: "OrderedDict[str, tuple[int, object]]" = OrderedDict()

    # -- session records

    def start(self, ns: str, algorithm: str = "sha256", counted: bool = True) -> str:
        """Open a session. ``counted`` ones (client-visible) are subject to the per-namespace cap."""
        check_algorithm(algorithm)
        if counted:
            self.limits.admit(ns)
        upload_id = new_upload_id()
        info = {"namespace": ns, "algorithm": algorithm, "started_at": format_ts(now())}
        if counted:
            info["counted"] = True
            # Marker first: a crash before the session exists over-counts until a sweep drops the
            # marker, where the other order would leave a session the cap never sees.
            self.limits.mark(ns, upload_id)
        self.blobs.put(paths.upload_info(upload_id), json.dumps(info).encode())
        self.blobs.put(paths.upload_data(upload_id), b"")
        return upload_id

    def session_info(self, upload_id: str):
        """The session record (namespace, algorithm, started_at), or None when gone or not JSON."""
        try:
            return json.loads(self.blobs.get(paths.upload_info(upload_id)))
        except (NotFound, ValueError):
            return None

    def info(self, ns: str, upload_id: str) -> dict:
        validate_upload_id(upload_id)
        info = self.session_info(upload_id)
        if info is None:
            raise BlobUploadUnknown(f"upload {upload_id} unknown")
        if info.get("namespace") != ns:
            raise BlobUploadUnknown(f"upload {upload_id} unknown to {ns}")
        return info

    def live(self, ns: str, upload_id: str) -> tuple[dict, int]:
        """The session's record and size; BLOB_UPLOAD_UNKNOWN when gone or idle past the timeout
        (an expired session is removed here, lazily)."""
        info = self.info(ns, upload_id)
        try:
            st = self.blobs.stat(paths.upload_data(upload_id))
        except NotFound:
            raise BlobUploadUnknown(f"upload {upload_id} unknown") from None
        if self.limits.expired(st.mtime) and self.limits.expire(ns, upload_id):
            self._hashers.pop(upload_id, None)
            raise BlobUploadUnknown(f"upload {upload_id} expired: idle for more than "
                                    f"{self.limits.idle_timeout:g}s")
        return info, st.size

    def offset(self, upload_id: str) -> int:
        try:
            return self.blobs.stat(paths.upload_data(upload_id)).size
        except NotFound:
            raise BlobUploadUnknown(f"upload {upload_id} unknown") from None

    def status(self, ns: str, upload_id: str) -> int:
        return self.live(ns, upload_id)[1]

    def cancel(self, ns: str, upload_id: str) -> None:
        info = self.info(ns, upload_id)
        with self.locks.lock(f"upload:{upload_id}"):
            self.blobs.delete_prefix(paths.upload_dir(upload_id))
        self._forget(ns, upload_id, info)

    def _forget(self, ns: str, upload_id: str, info: dict) -> None:
        """After the session's objects are gone: its marker (counted sessions only) and cached hash."""
        if info.get("counted"):
            self.limits.unmark(ns, upload_id)
        self._hashers.pop(upload_id, None)

    def list_sessions(self) -> list[str]:
        return [u for u in self.blobs.children(paths.UPLOADS) if _UPLOAD_ID.fullmatch(u)]

    # -- writing

    def append(self, ns: str, upload_id: str, chunks: Iterable[bytes],
               content_range: tuple[int, int] | None, length: int | None) -> int:
        """Append one chunk; returns the new offset. 416 when the range does not continue the upload."""
        info, _ = self.live(ns, upload_id)
        with self.locks.lock(f"upload:{upload_id}"):
            return self._append_locked(upload_id, info["algorithm"], chunks, content_range, length)

    @contextlib.contextmanager
    def appending(self, ns: str, upload_id: str) -> Iterator[Callable[[Iterable[bytes]], int]]:
        """Hold the session for a run of appends by one writer (a pull-through fill streaming a
        body in batches): it is checked and locked once, not at every batch. Yields
        ``append(chunks) -> new offset``."""
        info, _ = self.live(ns, upload_id)
        with self.locks.lock(f"upload:{upload_id}"):
            yield lambda chunks: self._append_locked(upload_id, info["algorithm"], chunks, None, None)

    def _append_locked(self, upload_id, algorithm, chunks, content_range, length) -> int:
        offset = self.offset(upload_id)
        if content_range is not None:
            start, end = content_range
            if start != offset or end < start:
                raise RangeInvalid(f"range {start}-{end} does not continue the upload at offset {offset}",
                                   detail={"offset": offset})
            if length is not None and end - start + 1 != length:
                raise SizeInvalid(f"Content-Range {start}-{end} does not match Content-Length {length}")
            length = end - start + 1
        if length is not None and offset + length > self.max_blob_size:
            raise TooLarge(f"upload would exceed the maximum blob size of {self.max_blob_size} bytes")

        hasher = self._take_hasher(upload_id, offset, algorithm)
        counted = _Counted(chunks, hasher, self.max_blob_size - offset)
        key = paths.upload_data(upload_id)
        try:
            new_size = self.blobs.append(key, counted)
        except BaseException:
            self._undo(key, offset)
            raise
        if counted.overflow:
            self._undo(key, offset)
            raise TooLarge(f"upload exceeds the maximum blob size of {self.max_blob_size} bytes")
        if length is not None and counted.count != length:
            self._undo(key, offset)
            raise SizeInvalid(f"received {counted.count} bytes, expected {length}")
        self._keep_hasher(upload_id, new_size, hasher)
        return new_size

    def _undo(self, key: str, offset: int) -> None:
        truncate = getattr(self.blobs, "truncate", None)
        if truncate is not None:
            truncate(key, offset)

    def _take_hasher(self, upload_id: str, offset: int, algorithm: str):
        cached = self._hashers.pop(upload_id, None)
        if cached is not None and cached[0] == offset and cached[1].name == algorithm:
            return cached[1]
        return self._rehash(upload_id, offset, algorithm)

    def _rehash(self, upload_id: str, offset: int, algorithm: str):
        hasher = hashlib.new(algorithm)
        if offset:
            with self.blobs.open_read(paths.upload_data(upload_id)) as fh:
                remaining = offset
                while remaining:
                    block = fh.read(min(remaining, 1 << 20))
                    if not block:
                        break
                    hasher.update(block)
                    remaining -= len(block)
        return hasher

    def _keep_hasher(self, upload_id: str, offset: int, hasher) -> None:
        self._hashers[upload_id] = (offset, hasher)
        while len(self._hashers) > self.HASH_CACHE:
            self._hashers.popitem(last=False)

    def complete(self, ns: str, upload_id: str, digest: Digest, chunks: Iterable[bytes] | None,
                 content_range: tuple[int, int] | None, length: int | None, actor: Actor | None = None,
                 report: bool = True) -> Digest:
        """``report=False`` for a blob nobody pushed (a pull-through cache storing what it fetched):
        no ``blob.push`` activity, so no watcher vets or hears of it."""
        info, _ = self.live(ns, upload_id)
        pushed = self.listeners.activity("blob.push", ns, actor, digest=str(digest)) if report else None
        with self.locks.lock(f"upload:{upload_id}"):
            before = None
            if chunks is not None and (length is None or length > 0 or content_range is not None):
                before = self.offset(upload_id)
                self._append_locked(upload_id, info["algorithm"], chunks, content_range, length)
            size = self.offset(upload_id)
            hasher = self._take_hasher(upload_id, size, digest.algorithm)
            actual = hasher.hexdigest()
            try:
                if actual != digest.hex:
                    raise DigestInvalid(f"digest {digest} does not match the uploaded content "
                                        f"({digest.algorithm}:{actual})")
                self.listeners.vet(pushed)
            except Exception:
                if before is not None and before != size:
                    # A refused close leaves the session as it was, so the client can retry
                    # the same PUT; the final chunk it carried is dropped.
                    self._undo(paths.upload_data(upload_id), before)
                    self._hashers.pop(upload_id, None)
                else:
                    self._keep_hasher(upload_id, size, hasher)
                raise
            self._finalize(ns, upload_id, digest, info)
        self.listeners.emit(pushed)
        return digest

    def _finalize(self, ns: str, upload_id: str, digest: Digest, info: dict) -> None:
        with self.locks.lock(f"blob:{digest}"):
            target = paths.blob_data(digest)
            if self.blobs.exists(target):
                self.blobs.delete(paths.upload_data(upload_id))
            else:
                self.blobs.move(paths.upload_data(upload_id), target)
            self.blob_service.grant(ns, digest)
        self.blobs.delete_prefix(paths.upload_dir(upload_id))
        self._forget(ns, upload_id, info)

    def monolithic(self, ns: str, digest: Digest, chunks: Iterable[bytes], length: int | None,
                   actor: Actor | None = None) -> Digest:
        """Single-request upload (POST ?digest= or a direct PUT): stream, hash and store in one pass.
        Its session lives for this request only, so it is not counted against the cap."""
        upload_id = self.start(ns, digest.algorithm, counted=False)
        try:
            self.complete(ns, upload_id, digest, chunks, None, length, actor)
        except BaseException:
            self.blobs.delete_prefix(paths.upload_dir(upload_id))
            self._hashers.pop(upload_id, None)
            raise
        return digest


class _Counted:
    """Iterate chunks, hashing and counting them; stop once ``limit`` bytes are exceeded."""

    def __init__(self, chunks: Iterable[bytes], hasher, limit: int):
        self.chunks = chunks
        self.hasher = hasher
        self.limit = limit
        self.count = 0
        self.overflow = False

    def __iter__(self) -> Iterator[bytes]:
        # The hash of one chunk runs on a native thread while the store writes it and the
        # next one is received; the hasher is complete once iteration ends (hashing.py).
        with overlapped(self.hasher) as update:
            for chunk in self.chunks:
                if not chunk:
                    continue
                self.count += len(chunk)
                if self.count > self.limit:
                    self.overflow = True
                    return
                update(chunk)
                yield chunk
