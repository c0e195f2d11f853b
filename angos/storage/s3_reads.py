"""Reading S3 objects as files, including append objects staged as part objects.

Role: the readers :meth:`angos.storage.s3.S3Store.open_read` returns, and the
naming of staged parts (``<key>~part000001`` ...; see :mod:`angos.storage.s3`
for the layout). :class:`Body` is a file over one GET's streaming body;
:class:`Concat` reads an append object's part objects, then its tail, from an
offset, opening one GET at a time. Network errors surface as
:class:`~angos.storage.base.StorageUnavailable`.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

from .base import StorageUnavailable

if TYPE_CHECKING:
    from .s3 import S3Store

PART_MARK = "~part"  # "~" appears in no key angos.registry.paths builds: listings hide part objects by it


def part_key(key: str, n: int) -> str:
    return f"{key}{PART_MARK}{n:06d}"


class Body(io.RawIOBase):
    """A readable file over a botocore StreamingBody (network errors become StorageUnavailable)."""

    def __init__(self, body):
        self._body = body

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        try:
            return self._body.read(None if size is None or size < 0 else size)
        except Exception as exc:  # noqa: BLE001 - urllib3/botocore read errors
            raise StorageUnavailable(f"S3 read failed: {exc}") from None

    def readinto(self, b) -> int:
        data = self.read(len(b))
        b[:len(data)] = data
        return len(data)

    def close(self) -> None:
        try:
            self._body.close()
        finally:
            super().close()


class Concat(io.RawIOBase):
    """Reads an append object (its part objects, then the tail) from ``offset``, one part at a time."""

    def __init__(self, store: "S3Store", key: str, n: int, p: int, offset: int):
        self._store, self._key, self._n, self._p = store, key, n, p
        self._index = offset // p + 1  # 1..n are parts, n+1 is the tail
        if self._index > n + 1:
            self._index = n + 1
        self._skip = offset - (self._index - 1) * p
        self._cur = None

    def readable(self) -> bool:
        return True

    def _open_next(self) -> bool:
        if self._index > self._n + 1:
            return False
        key = part_key(self._key, self._index) if self._index <= self._n else self._key
        self._index += 1
        skip, self._skip = self._skip, 0
        if self._index - 1 == self._n + 1:
            # The tail may be shorter than skip when the object shrank: read it whole and slice.
            with self._store._errors(key):
                data = self._store.client.get_object(Bucket=self._store.bucket, Key=self._store._k(key))["Body"].read()
            self._cur = io.BytesIO(data[skip:])
        else:
            self._cur = Body(self._store._get_range(key, skip))
        return True

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            out = bytearray()
            while True:
                block = self.read(1 << 20)
                if not block:
                    return bytes(out)
                out += block
        while True:
            if self._cur is None and not self._open_next():
                return b""
            data = self._cur.read(size)
            if data:
                return data
            self._cur.close()
            self._cur = None

    def readinto(self, b) -> int:
        data = self.read(len(b))
        b[:len(data)] = data
        return len(data)

    def close(self) -> None:
        if self._cur is not None:
            self._cur.close()
            self._cur = None
        super().close()
