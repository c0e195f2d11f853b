"""Hash an upload stream on a native thread while the caller receives and writes the next chunk.

A hashed upload does three things per chunk: receive it (socket), hash it and
write it (file). Done in turn on one greenlet they add up; hashlib and file
writes both release the GIL on large buffers, so hashing chunk N on a native
thread while the greenlet writes chunk N and receives chunk N+1 takes the hash
off the critical path (on 2 cores a 1 GiB monolithic PUT went from
hash + write + receive to roughly write + receive; numbers in
docs/performance.md).

Contract of :func:`overlapped`: ``with overlapped(hasher) as update:`` gives an
``update(chunk)`` that feeds chunks to ``hasher`` in call order, at most one in
flight. When the block ends normally every chunk has been hashed, so the
hasher's state is exactly what inline ``hasher.update`` calls would have
produced. When it ends by an exception the hasher must be discarded (an update
may still be running). Chunks must not be mutated after they are handed over
(the bytes objects from a request body never are).

The native threads come from the gevent hub's thread pool, whose results a
greenlet waits for without blocking its peers. Outside a gevent-patched
process (tests, tools) hashing stays inline: same result, no threads.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

from ..native import native_spawn

# Below this, handing a chunk to a thread costs more than hashing it here.
MIN_OFFLOAD = 64 * 1024


@contextmanager
def overlapped(hasher) -> Iterator[Callable[[bytes], None]]:
    spawn = native_spawn()
    if spawn is None:
        yield hasher.update
        return
    pending = None

    def update(chunk: bytes) -> None:
        nonlocal pending
        if pending is not None:
            done, pending = pending, None
            done.get()  # keeps order, and re-raises a failure of the previous update
        if len(chunk) < MIN_OFFLOAD:
            hasher.update(chunk)
        else:
            pending = spawn(hasher.update, chunk)

    yield update
    # Reached only when the block ended normally. On an exception the stream was
    # abandoned and its hasher is discarded, so there is nothing to wait for (and a
    # generator closed late by the garbage collector must not block in the hub).
    if pending is not None:
        pending.get()
