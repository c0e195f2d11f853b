"""Blob reads, ownership grants, mounts and deletes.

A namespace sees a blob only through an ownership grant (it uploaded or mounted
it); the bytes are shared and content addressed. Invariant kept under the
``blob:<digest>`` lock: bytes exist whenever some namespace holds a grant,
and the last revoked grant deletes the bytes.

The blob index (``blob-index/<digest>/<namespace entry>``) is what "the last
grant" is judged by, so a grant must never exist without its index entry: a
grant is written *after* its entry and revoked *before* it. Whichever write
fails, what is left is an entry without a grant, which only keeps bytes alive
longer (``scrub --blobs`` drops it), never a grant whose bytes a sibling's
delete could remove.

A mount is the ``blob.push`` activity (event webhooks), vetted before the grant.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import BinaryIO

from ..oci.digest import Digest
from ..oci.errors import BlobReferenced, BlobUnknown
from ..storage import NotFound
from . import paths
from .events import Actor, Listeners
from .timestamps import format_ts, now


@dataclass(frozen=True)
class BlobHandle:
    digest: Digest
    size: int
    local_path: str | None


class BlobService:
    def __init__(self, blobs, meta, locks, listeners: Listeners | None = None):
        self.blobs = blobs
        self.meta = meta
        self.locks = locks
        self.listeners = listeners if listeners is not None else Listeners()

    # -- grants

    def has_grant(self, ns: str, d: Digest) -> bool:
        return self.meta.exists(paths.grant(ns, d))

    def grant(self, ns: str, d: Digest) -> None:
        """Record that ``ns`` owns ``d``: index entry first, then the grant. Caller holds the blob lock."""
        self.index(ns, d)
        record = json.dumps({"created_at": format_ts(now())}).encode()
        self.meta.put_if_absent(paths.grant(ns, d), record)

    def index(self, ns: str, d: Digest) -> None:
        # The body holds the namespace: a hashed entry's key cannot be read back (paths.ns_entry).
        self.meta.put_if_absent(paths.blob_index(d, ns), ns.encode())

    def unindex(self, ns: str, d: Digest) -> None:
        """Remove ``ns``'s index entry, and the unbounded one an earlier version may have written."""
        self.meta.delete(paths.blob_index(d, ns))
        legacy = paths.legacy_blob_index(d, ns)
        if legacy is not None:
            self.meta.delete(legacy)

    def grant_created_at(self, ns: str, d: Digest) -> str | None:
        try:
            return json.loads(self.meta.get(paths.grant(ns, d))).get("created_at")
        except (NotFound, ValueError):
            return None

    def namespaces_holding(self, d: Digest) -> list[str]:
        """The namespaces the index lists for ``d`` (one read per hashed entry, none for the others)."""
        out = []
        for name in self.meta.children(paths.blob_index_dir(d)):
            ns = self.entry_namespace(d, name)
            if ns is not None:
                out.append(ns)
        return out

    def entry_namespace(self, d: Digest, name: str) -> str | None:
        """The namespace index entry ``name`` of ``d`` stands for; None when it cannot be read."""
        ns = paths.ns_from_entry(name)
        if ns is not None:
            return ns
        try:
            ns = self.meta.get(paths.blob_index_entry(d, name)).decode()
        except (NotFound, UnicodeDecodeError):
            return None  # removed since listed, or not a record: nobody to report
        # An entry is only believed for the namespace whose key it sits under.
        return ns if paths.blob_index(d, ns) == paths.blob_index_entry(d, name) else None

    # -- reads

    def stat(self, ns: str, d: Digest) -> BlobHandle:
        if not self.has_grant(ns, d):
            raise BlobUnknown(f"blob {d} unknown to {ns}")
        key = paths.blob_data(d)
        try:
            info = self.blobs.stat(key)
        except NotFound:
            raise BlobUnknown(f"blob {d} unknown to {ns}") from None
        return BlobHandle(d, info.size, self.blobs.local_path(key))

    def redirect_url(self, d: Digest) -> str | None:
        """A presigned URL for the bytes of ``d`` (S3), or None. Caller checked the grant (stat)."""
        return self.blobs.presign(paths.blob_data(d))

    def open(self, ns: str, d: Digest, offset: int = 0) -> BinaryIO:
        try:
            return self.blobs.open_read(paths.blob_data(d), offset)
        except NotFound:
            raise BlobUnknown(f"blob {d} unknown to {ns}") from None

    # -- mount

    def mount(self, ns: str, d: Digest, source: str | None, can_read_source, actor: Actor | None = None) -> bool:
        """Grant ``d`` to ``ns`` if the caller can read it somewhere; else False.

        ``source`` None means "any namespace the caller may read". ``can_read_source(ns)``
        is the caller's get-blob permission check. ``actor`` is who asked (event webhooks).
        """
        candidates = [source] if source else self.namespaces_holding(d)
        for src in candidates:
            if src and self.has_grant(src, d) and can_read_source(src):
                pushed = self.listeners.activity("blob.push", ns, actor, digest=str(d))
                self.listeners.vet(pushed)
                with self.locks.lock(f"blob:{d}"):
                    if not self.blobs.exists(paths.blob_data(d)):
                        return False
                    self.grant(ns, d)
                self.listeners.emit(pushed)
                return True
        return False

    # -- delete

    def is_referenced(self, ns: str, d: Digest) -> bool:
        return bool(self.meta.children(paths.ref_dir(ns, d)))

    def delete(self, ns: str, d: Digest) -> None:
        if not self.has_grant(ns, d):
            raise BlobUnknown(f"blob {d} unknown to {ns}")
        if self.is_referenced(ns, d):
            raise BlobReferenced(f"blob {d} is referenced by manifests in {ns}")
        self.revoke(ns, d)

    def revoke(self, ns: str, d: Digest) -> bool:
        """Drop ns's grant, then its index entry; delete the bytes when no entry is left.
        Returns True if bytes went."""
        with self.locks.lock(f"blob:{d}"):
            self.meta.delete(paths.grant(ns, d))
            self.unindex(ns, d)
            # Any entry counts, even one whose name cannot be read: keeping bytes is the safe error.
            if not self.meta.children(paths.blob_index_dir(d)):
                self.blobs.delete(paths.blob_data(d))
                return True
        return False
