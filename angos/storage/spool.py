"""Bytes on their way to one S3 object (a part, a tail) without holding them in memory.

Role: :class:`Spool` keeps ``SPOOL`` (1 MiB) in memory and the rest in an
unlinked temporary file (``$TMPDIR``); :func:`fill` cuts a stream of chunks
into spools of exactly one part each, handing every full one to a ``flush``
callback. Contract: the caller closes the spool :func:`fill` returns; on an
error every spool made there is already closed.
"""

from __future__ import annotations

import tempfile
from typing import Iterable

SPOOL = 1024 * 1024  # bytes of a part or tail held in memory on the way to S3; the rest waits on disk


class Spool:
    """The bytes of one object on its way to S3 (a part, a tail): up to ``SPOOL`` in memory, the
    rest in an unlinked temporary file. ``body()`` rewinds it for boto3, which reads it (again on a
    retry) from there."""

    def __init__(self):
        self.file = tempfile.SpooledTemporaryFile(max_size=SPOOL)
        self.size = 0

    def write(self, data) -> None:
        self.file.write(data)
        self.size += len(data)

    def body(self):
        self.file.seek(0)
        return self.file

    def close(self) -> None:
        self.file.close()


def fill(spool: Spool, chunks: Iterable[bytes], part_size: int, flush) -> Spool:
    """Write ``chunks`` into ``spool``; each time it holds ``part_size`` bytes, ``flush(spool)``
    sends it and a new one takes its place. Returns the last spool (fewer than ``part_size`` bytes),
    which the caller closes; on an error every spool made here is closed."""
    try:
        for chunk in chunks:
            view = memoryview(chunk)
            while view:
                take = min(len(view), part_size - spool.size)
                spool.write(view[:take])
                view = view[take:]
                if spool.size == part_size:
                    flush(spool)
                    spool.close()
                    spool = Spool()
    except BaseException:
        spool.close()
        raise
    return spool
