"""Large pseudo-random blob bodies computed on the fly, for the crash and memory tests.

Contract: :class:`PseudoRandomBlob` describes ``size`` bytes derived from a
seed, block by block, so a test can stream (and re-stream from any block
boundary) hundreds of MiB without ever holding them in memory. The bytes are
incompressible and differ per seed, so no test collides with another's blob.
"""

from __future__ import annotations

import hashlib
import random
import threading
import time
from typing import Iterator

BLOCK = 1 << 20


class PseudoRandomBlob:
    def __init__(self, size: int, seed: int | None = None):
        self.size = size
        self.seed = random.getrandbits(64) if seed is None else seed
        self._digest: str | None = None

    def block(self, index: int) -> bytes:
        length = min(BLOCK, self.size - index * BLOCK)
        return random.Random(self.seed * 1_000_003 + index).randbytes(length)

    def chunks(self, start: int = 0, *, hasher=None, after_each=None,
               stop: threading.Event | None = None) -> Iterator[bytes]:
        """Yield the bytes from offset ``start``.

        ``hasher`` is updated with every chunk; ``after_each(sent)`` runs after
        each chunk (a test uses it to throttle or to signal progress); ``stop``
        ends the stream early.
        """
        sent = start
        for index in range(start // BLOCK, (self.size + BLOCK - 1) // BLOCK):
            if stop is not None and stop.is_set():
                return
            data = self.block(index)
            if index == start // BLOCK:
                data = data[start % BLOCK:]
            if hasher is not None:
                hasher.update(data)
            yield data
            sent += len(data)
            if after_each is not None:
                after_each(sent)

    @property
    def digest(self) -> str:
        """The sha256 digest (computed once, by streaming)."""
        if self._digest is None:
            h = hashlib.sha256()
            for _ in self.chunks(hasher=h):
                pass
            self._digest = "sha256:" + h.hexdigest()
        return self._digest


def throttle(delay: float):
    """An ``after_each`` that sleeps ``delay`` seconds per chunk (keeps an upload in flight)."""
    def pause(_sent: int) -> None:
        time.sleep(delay)  # a slow client, what the caller's test is about
    return pause


def hash_response(response, algorithm: str = "sha256") -> tuple[str, int]:
    """Stream a ``requests`` response body through a hash; returns (digest, length)."""
    h = hashlib.new(algorithm)
    total = 0
    for chunk in response.iter_content(BLOCK):
        h.update(chunk)
        total += len(chunk)
    return f"{algorithm}:{h.hexdigest()}", total


class SizedStream:
    """An iterable body with a known length: ``requests`` then sends it with a
    ``Content-Length`` instead of chunked transfer encoding."""

    def __init__(self, chunks, length: int):
        self._chunks = chunks
        self._length = length

    def __len__(self) -> int:
        return self._length

    def __iter__(self):
        return iter(self._chunks)
