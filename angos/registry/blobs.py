"""Blob reads, ownership grants, mounts and deletes.

A namespace sees a blob only through an ownership grant (it uploaded or mounted
it); the bytes are shared and content addressed. Invariant kept under the
``blob:<digest>`` lock: bytes exist whenever some namespace holds a grant,
and the last revoked grant deletes the bytes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import BinaryIO

from ..oci.digest import Digest
from ..oci.errors import BlobReferenced, BlobUnknown
from ..storage import NotFound
from . import paths
from .timestamps import format_ts, now


@dataclass(frozen=True)
class BlobHandle:
    digest: Digest
    size: int
    local_path: str | None


class BlobService:
    def __init__(self, blobs, meta, locks):
        self.blobs = blobs
        self.meta = meta
        self.locks = locks

    # -- grants

    def has_grant(self, ns: str, d: Digest) -> bool:
        return self.meta.exists(paths.grant(ns, d))

    def grant(self, ns: str, d: Digest) -> None:
        """Record that ``ns`` owns ``d``. Caller holds the blob lock."""
        record = json.dumps({"created_at": format_ts(now())}).encode()
        self.meta.put_if_absent(paths.grant(ns, d), record)
        self.meta.put_if_absent(paths.blob_index(d, ns), b"")

    def grant_created_at(self, ns: str, d: Digest) -> str | None:
        try:
            return json.loads(self.meta.get(paths.grant(ns, d))).get("created_at")
        except (NotFound, ValueError):
            return None

    def namespaces_holding(self, d: Digest) -> list[str]:
        return [paths.namespace_from_index_entry(n) for n in self.meta.children(paths.blob_index_dir(d))]

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

    def mount(self, ns: str, d: Digest, source: str | None, can_read_source) -> bool:
        """Grant ``d`` to ``ns`` if the caller can read it somewhere; else False.

        ``source`` None means "any namespace the caller may read". ``can_read_source(ns)``
        is the caller's get-blob permission check.
        """
        candidates = [source] if source else self.namespaces_holding(d)
        for src in candidates:
            if src and self.has_grant(src, d) and can_read_source(src):
                with self.locks.lock(f"blob:{d}"):
                    if not self.blobs.exists(paths.blob_data(d)):
                        return False
                    self.grant(ns, d)
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
        """Drop ns's grant; delete the bytes when no namespace holds one. Returns True if bytes went."""
        with self.locks.lock(f"blob:{d}"):
            self.meta.delete(paths.grant(ns, d))
            self.meta.delete(paths.blob_index(d, ns))
            if not self.meta.children(paths.blob_index_dir(d)):
                self.blobs.delete(paths.blob_data(d))
                return True
        return False
