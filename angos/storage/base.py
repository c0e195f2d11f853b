"""The one small storage contract every backend implements.

Keys are ``/``-separated relative paths built only by ``angos.registry.paths``
(never from raw client input). Contract, per method:

- ``get(key)`` returns the whole object (small objects only: metadata), or
  raises :class:`NotFound`.
- ``put(key, data)`` is atomic: readers see the old object or the new one,
  never a prefix of it.
- ``put_if_absent(key, data)`` creates the object only if no object has the key;
  returns whether it did. Atomic against concurrent callers.
- ``write_stream(key, chunks)`` stores an iterable of byte chunks atomically in
  constant memory and returns the byte count.
- ``append(key, chunks)`` extends an upload object in constant memory and
  returns its new size (the object is created when absent). Not atomic:
  callers hold the upload's lock.
- ``open_read(key, offset)`` returns a binary file-like positioned at offset.
- ``delete(key)`` is idempotent; ``delete_prefix`` removes a whole subtree.
- ``stat(key)`` returns :class:`ObjectInfo` or raises :class:`NotFound`.
- ``list(prefix)`` yields every key under a prefix (recursively);
  ``children(prefix)`` lists the immediate child names (objects and
  "directories") of a prefix.
- ``move(src, dst)`` renames an object; when ``dst`` exists it is replaced.
- ``truncate(key, size)`` cuts an upload object written by ``append`` back to
  ``size`` bytes (undoes a refused chunk); a no-op when it is already shorter
  or absent.
- ``local_path(key)`` is a filesystem path for zero-copy serving, or None.
- ``presign(key, content_type=None)`` is a time-limited URL a client can GET the
  object from directly (S3), or None when the backend cannot hand one out.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import BinaryIO, Iterable, Iterator

from ..oci.errors import AngosError


class NotFound(AngosError):
    """No object has the requested key."""


class StorageUnavailable(AngosError):
    """The backend cannot be reached (I/O error, network, credentials)."""


@dataclass(frozen=True)
class ObjectInfo:
    size: int
    mtime: float


class ObjectStore(ABC):
    name = "abstract"

    @abstractmethod
    def get(self, key: str) -> bytes: ...

    @abstractmethod
    def put(self, key: str, data: bytes) -> None: ...

    @abstractmethod
    def put_if_absent(self, key: str, data: bytes) -> bool: ...

    @abstractmethod
    def write_stream(self, key: str, chunks: Iterable[bytes]) -> int: ...

    @abstractmethod
    def append(self, key: str, chunks: Iterable[bytes]) -> int: ...

    @abstractmethod
    def open_read(self, key: str, offset: int = 0) -> BinaryIO: ...

    @abstractmethod
    def delete(self, key: str) -> None: ...

    @abstractmethod
    def delete_prefix(self, prefix: str) -> None: ...

    @abstractmethod
    def stat(self, key: str) -> ObjectInfo: ...

    @abstractmethod
    def list(self, prefix: str) -> Iterator[str]: ...

    @abstractmethod
    def children(self, prefix: str) -> list[str]: ...

    @abstractmethod
    def move(self, src: str, dst: str) -> None: ...

    def exists(self, key: str) -> bool:
        try:
            self.stat(key)
            return True
        except NotFound:
            return False

    def local_path(self, key: str) -> str | None:
        return None

    supports_presign = False

    def presign(self, key: str, content_type: str | None = None) -> str | None:
        return None

    @abstractmethod
    def truncate(self, key: str, size: int) -> None: ...

    def sizes(self, prefix: str) -> Iterator[tuple[str, int]]:
        """``(key, size)`` of every object under ``prefix``, like :meth:`list` (objects that
        vanish during the listing are left out). Backends override it where the listing
        carries sizes already."""
        for key in self.list(prefix):
            try:
                yield key, self.stat(key).size
            except NotFound:
                continue

    def check(self) -> None:
        """Raise StorageUnavailable when the backend cannot serve requests."""
