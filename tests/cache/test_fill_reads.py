"""How a fill's readers get their bytes (angos.cache.fills.Fill): from the leader's memory window
while they keep up, from the upload session on storage once they fall behind it, from the committed
blob at the end, and never the last byte before the digest is verified. The window holds at most
WINDOW bytes, however much of the blob is not yet written."""

from __future__ import annotations

import hashlib
import os
import threading
import time

from angos.cache.fills import DONE, WINDOW, Fill
from angos.oci.digest import Digest
from angos.registry import paths
from angos.storage.fs import FsStore
from tests.conftest import wait_for

CHUNK = 256 * 1024


def _blob(n_chunks: int) -> tuple[bytes, Digest]:
    data = os.urandom(n_chunks * CHUNK - 17)  # an odd size: the last chunk is short
    return data, Digest.parse("sha256:" + hashlib.sha256(data).hexdigest())


def _chunks(data: bytes):
    return [data[i:i + CHUNK] for i in range(0, len(data), CHUNK)]


class Reader(threading.Thread):
    def __init__(self, fill: Fill, store, start: int = 0):
        super().__init__(daemon=True)
        self.fill, self.store, self.start_at = fill, store, start
        self.got = bytearray()
        self.error: BaseException | None = None

    def run(self):
        try:
            for block in self.fill.read(self.store, self.start_at, self.fill.size - self.start_at):
                self.got += block
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc


def test_a_reader_behind_the_window_reads_storage_then_catches_up_in_memory(tmp_path):
    store = FsStore(str(tmp_path))
    data, digest = _blob(40)
    chunks = _chunks(data)
    session = paths.upload_data("0" * 32)
    fill = Fill(digest, "ns", stall=30)
    fill.running(session, len(data))
    # The first 24 chunks arrive and are written: the window forgets them.
    for c in chunks[:24]:
        fill.arrived(c)
    written = store.append(session, chunks[:24])
    fill.progress(written)
    assert not any(start < written for start, _ in fill._window)
    # The next 10 arrive but are not written yet: only memory has them.
    for c in chunks[24:34]:
        fill.arrived(c)
    late = Reader(fill, store, start=5)
    late.start()
    wait_for(lambda: len(late.got) == 34 * CHUNK - 5, what="the late reader reaches the newest chunk")
    assert bytes(late.got) == data[5:34 * CHUNK]
    # The rest arrives; the last byte is withheld until the fill is done.
    for c in chunks[34:]:
        fill.arrived(c)
    wait_for(lambda: len(late.got) == len(data) - 6, what="all but the last byte")
    written = store.append(session, chunks[24:])
    fill.progress(written)
    assert fill._window == type(fill._window)()
    assert len(late.got) == len(data) - 6
    store.put(paths.blob_data(digest), data)
    fill.done()
    late.join(10)
    assert late.error is None and fill.state == DONE
    assert bytes(late.got) == data[5:]


def test_readers_that_keep_up_never_read_the_session(tmp_path):
    """With nothing written yet, every byte but the last can only come from memory."""
    store = FsStore(str(tmp_path))
    data, digest = _blob(12)
    fill = Fill(digest, "ns", stall=30)
    fill.running(paths.upload_data("1" * 32), len(data))
    readers = [Reader(fill, store) for _ in range(3)]
    for r in readers:
        r.start()
    for c in _chunks(data):
        fill.arrived(c)
    wait_for(lambda: all(len(r.got) == len(data) - 1 for r in readers), what="three readers served from memory")
    store.put(paths.blob_data(digest), data)
    fill.done()
    for r in readers:
        r.join(10)
        assert r.error is None and bytes(r.got) == data


def test_the_window_is_bounded_and_a_reader_behind_it_waits_for_the_bytes_to_land(tmp_path):
    """On S3 a batch is a whole part, larger than the window: of the chunks received and not yet
    written, memory keeps only the last WINDOW bytes, and a reader at an offset the window no longer
    holds waits until the batch is written, then reads storage."""
    store = FsStore(str(tmp_path))
    data, digest = _blob(WINDOW // CHUNK + 8)
    chunks = _chunks(data)
    session = paths.upload_data("2" * 32)
    fill = Fill(digest, "ns", stall=30)
    fill.running(session, len(data))
    for c in chunks[:-1]:  # all but the last arrive; none is written (the part is still being gathered)
        fill.arrived(c)
    assert sum(len(c) for _, c in fill._window) <= WINDOW
    oldest = fill._window[0][0]
    assert oldest > 0
    early = Reader(fill, store)  # at 0: no longer in memory, not yet in storage
    recent = Reader(fill, store, start=oldest)
    early.start()
    recent.start()
    received = len(data) - len(chunks[-1])
    wait_for(lambda: len(recent.got) == received - oldest, what="the recent reader served from memory")
    time.sleep(0.2)  # the early reader has nothing it may read: it must still be waiting
    assert early.got == bytearray() and early.error is None
    written = store.append(session, chunks[:-1])
    fill.progress(written)
    wait_for(lambda: len(early.got) == written, what="the early reader reads what landed")
    assert bytes(early.got) == data[:written]
    fill.arrived(chunks[-1])
    wait_for(lambda: len(early.got) == len(data) - 1, what="all but the last byte")
    store.put(paths.blob_data(digest), data)
    fill.done()
    for r in (early, recent):
        r.join(10)
        assert r.error is None
    assert bytes(early.got) == data and bytes(recent.got) == data[oldest:]
