"""Blob fills: one upstream fetch per blob, however many clients and processes want it.

Role: bring a blob's bytes from an upstream into the blob store while any
number of readers stream them. A :class:`Fill` is this process's view of one
blob being fetched; :class:`Fills` keeps one per digest, so the greenlets of a
worker share it, and a driver thread per fill makes sure exactly one fetch
per digest runs across every process sharing the storage:

- The process that wins the fill lock ``fill:<digest>`` (tried without
  waiting, :meth:`angos.storage.locks.LockManager.lock` with ``timeout=0``)
  *leads*: it streams the upstream body into an ordinary upload session, in
  batches appended through :class:`angos.registry.uploads.UploadService`
  (hashed on the way; the session is locked once for all of them), and
  commits it exactly like a client upload: the digest is verified, then the
  bytes are moved into place and granted under the ``blob:<digest>`` lock.
  Nothing is visible before that move. It publishes a *fill record*
  (``fills/<alg>/<hex>`` in the blob store: upload session and size) for the
  other processes.
- Every other process *follows*: it reads the record and the session's size
  as it grows, until the blob is committed. A follower that finds the lock
  free while a record exists knows the leader died (the lock dies with its
  holder: ``flock``, or an expired lease) and takes over with a new session;
  one that finds the lock free and the record gone knows the fill failed.

Readers (:meth:`Fill.read`) are served while the blob arrives: in the leading
process from memory, a bounded window of the chunks received but not yet
written (so no byte is read back), behind that window and in other processes from the
session's bytes as each batch lands. The last byte is withheld until the
digest is verified, so no client ever receives a complete body that does not
match its digest. A failed fill (upstream error, stall, truncated body, wrong
digest, over ``max_blob_size``) removes its session and record, so nothing of
it is visible; its readers' responses are cut short and the next request
starts a new fill.

Contract: :meth:`Fills.join` returns the fill of a digest, starting its driver
if none runs here; the driver always ends the fill DONE or FAILED (a follower
that sees no progress for ``stall`` + 10 seconds gives up), so waiting on a fill
never hangs.
"""

from __future__ import annotations

import collections
import json
import logging
import threading
import time
from typing import Callable, Iterator

from .. import metrics as m
from ..digits import count
from ..oci.digest import Digest
from ..oci.errors import BadGateway, DigestInvalid, OciError, TooLarge, Unavailable
from ..registry import paths
from ..registry.uploads import validate_upload_id
from ..storage import NotFound
from ..storage.locks import LockTimeout

log = logging.getLogger("angos.cache.fills")

STARTING, RUNNING, DONE, FAILED = "starting", "running", "done", "failed"
CHUNK = 256 * 1024        # one read from the upstream
READ_CHUNK = 1024 * 1024  # one read from storage for a client
# A filesystem batch stays under direct.STAGE (1 MiB), so a fill is written through the page cache:
# a blob just pulled through the cache is the one the next pulls want (measured: with O_DIRECT fills
# the warm pull after a cold one was slower, the cold one no faster). The leader's readers are
# served from the fill's memory window meanwhile, which holds about one batch.
FS_BATCH = 1024 * 1024 - 64 * 1024
# A batch also ends after this long, so a slow upstream's bytes reach followers in other processes
# steadily.
BATCH_SECS = 0.5
# The most of a blob a leader keeps in memory for its readers (the chunks received and not yet
# known written). On a filesystem a batch lands before the window fills; on S3 a batch is a whole
# part (multipart_part_size, 50 MiB by default), and every uncached blob a client asks for would
# otherwise hold that much of the worker's memory until its part is uploaded. A reader that falls
# behind the window waits for the part to land and reads it from storage.
WINDOW = 8 * 1024 * 1024
# How often a follower looks at the leader's progress: a stat and a small read on a filesystem
# (cheap, and readers in other processes then trail the leader by milliseconds), requests on S3.
FOLLOW_POLL = {"fs": 0.01}
FOLLOW_POLL_DEFAULT = 0.2
# Beyond the upstream's own stall timeout: the process reading from the upstream notices a stall
# first (and cleans up) before a follower or a reader gives up on it.
MARGIN = 10.0


class Fill:
    """One blob being fetched, as this process sees it. Thread-safe; readers wait on ``cond``."""

    def __init__(self, digest: Digest, namespace: str, stall: float):
        self.digest = digest
        self.namespace = namespace    # whose upstream the leader asks (and whose grant the commit writes)
        self.stall = stall            # seconds without progress before a follower gives up
        self.cond = threading.Condition()
        self.state = STARTING
        self.size: int | None = None  # the upstream's Content-Length
        self.source: str | None = None  # storage key of the bytes so far (an upload session's data)
        self.available = 0            # how much of the blob readers may read (memory or ``source``)
        self.written = 0              # how much of it ``source`` holds
        # The leader's chunks received but not yet known written, as (offset, bytes): readers that keep
        # up are served from here. Trimmed as batches land, and to the last WINDOW bytes.
        self._window: collections.deque[tuple[int, bytes]] = collections.deque()
        self._window_bytes = 0
        self._received = 0
        self.error: OciError | None = None
        self.where = ""               # the upstream, for messages

    # -- driver side

    def _set(self, **changes) -> None:
        with self.cond:
            for k, v in changes.items():
                setattr(self, k, v)
            self.cond.notify_all()

    def running(self, source: str, size: int | None, written: int = 0) -> None:
        with self.cond:
            if source == self.source:
                written = max(written, self.written)  # a follower's stat raced the commit
            else:
                self._clear_window()
                self._received = 0
            self.state, self.source, self.size, self.written = RUNNING, source, size, written
            self.available = self._held_back(max(written, self._received), size)
            self.cond.notify_all()

    def arrived(self, chunk: bytes) -> None:
        """The leader received ``chunk`` (the next bytes of the blob); readers may have it now."""
        with self.cond:
            self._window.append((self._received, chunk))
            self._window_bytes += len(chunk)
            self._received += len(chunk)
            while self._window_bytes > WINDOW and len(self._window) > 1:
                self._window_bytes -= len(self._window.popleft()[1])
            self.available = self._held_back(self._received, self.size)
            self.cond.notify_all()

    def progress(self, written: int) -> None:
        with self.cond:
            self.written = written
            window = self._window
            while window and window[0][0] + len(window[0][1]) <= written:
                self._window_bytes -= len(window.popleft()[1])
            self.available = max(self.available, self._held_back(written, self.size))
            self.cond.notify_all()

    def _clear_window(self) -> None:
        self._window.clear()
        self._window_bytes = 0

    def _readable(self, pos: int) -> bool:
        """Whether a reader at ``pos`` can go on now: the byte is available, and in storage or still
        in the memory window (a reader behind the window waits for the bytes to land). Under ``cond``."""
        if self.available <= pos:
            return False
        return pos < self.written or bool(self._window) and self._window[0][0] <= pos

    def _from_window(self, pos: int, limit: int) -> bytes | None:
        """Bytes from ``pos`` (up to ``limit``) out of the memory window, or None if it no longer
        holds ``pos``. Whole chunks are returned as they are, without a copy. Under ``cond``."""
        for start, chunk in self._window:
            if start <= pos < start + len(chunk):
                if start == pos and start + len(chunk) <= limit:
                    return chunk
                return chunk[pos - start:min(len(chunk), limit - start)]
        return None

    @staticmethod
    def _held_back(written: int, size: int | None) -> int:
        # The last byte waits for the digest check: a reader never completes a body that is wrong.
        return min(written, size - 1) if size else written

    def done(self) -> None:
        with self.cond:
            self._clear_window()
        self._set(state=DONE)

    def fail(self, error: OciError) -> None:
        with self.cond:
            self._clear_window()
        self._set(state=FAILED, error=error)

    # -- reader side

    def wait_started(self) -> str:
        """Block until the upstream answered (RUNNING), or the fill ended; returns the state."""
        with self.cond:
            while self.state == STARTING:
                self.cond.wait(1.0)
            return self.state

    def wait_done(self) -> str:
        with self.cond:
            while self.state in (STARTING, RUNNING):
                self.cond.wait(1.0)
            return self.state

    def _wait_beyond(self, pos: int) -> tuple[str, int, int, str | None, bytes | None]:
        # The driver always ends the fill (the leader's upstream reads time out, a follower gives up
        # on a silent leader); this deadline only guards against a driver that hangs regardless.
        deadline = time.monotonic() + self.stall + 3 * MARGIN
        with self.cond:
            while self.state in (STARTING, RUNNING) and not self._readable(pos):
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.cond.wait(min(left, 1.0))
            block = None
            if self.state == RUNNING and self.available > pos:
                block = self._from_window(pos, self.available)
            return self.state, self.available, self.written, self.source, block

    def read(self, store, start: int, length: int) -> Iterator[bytes]:
        """Yield bytes ``[start, start + length)`` of the blob as the fill makes them available.
        Raises the fill's error (the response is cut short) if it fails."""
        pos, end = start, start + length
        while pos < end:
            state, available, written, source, block = self._wait_beyond(pos)
            if state == FAILED:
                raise self.error
            if block is not None:
                block = block[:end - pos]
                pos += len(block)
                yield block
                continue
            if state == DONE:
                key, limit = paths.blob_data(self.digest), end
            elif written > pos and available > pos:
                # Behind the memory window: from storage.
                key, limit = source, min(self._held_back(written, self.size), end)
            else:
                raise Unavailable(f"fetching {self.digest} from {self.where or 'the upstream'} made no progress "
                                  f"for {self.stall + 3 * MARGIN:g}s")
            try:
                fh = store.open_read(key, pos)
            except NotFound:
                if state == DONE:
                    raise
                # The session is being committed (moved into place): the blob is there in a moment.
                # Sleeping also yields to the driver under gevent, which a busy loop would starve.
                time.sleep(0.005)
                continue
            try:
                while pos < limit:
                    block = fh.read(min(READ_CHUNK, limit - pos))
                    if not block:
                        break
                    pos += len(block)
                    yield block
            finally:
                fh.close()


class _Batch:
    """Up to ``limit`` bytes (or ``BATCH_SECS`` of reading) of an upstream body, as chunks."""

    def __init__(self, raw, limit: int, arrived: Callable[[bytes], None]):
        self.raw = raw
        self.limit = limit
        self.arrived = arrived
        self.eof = False

    def __iter__(self):
        left = self.limit
        started = time.monotonic()
        # read1: whatever has arrived (up to CHUNK), so readers are not kept waiting for a full chunk.
        read = getattr(self.raw, "read1", self.raw.read)
        while left > 0:
            chunk = read(min(CHUNK, left))
            if not chunk:
                self.eof = True
                return
            left -= len(chunk)
            self.arrived(chunk)
            yield chunk
            if time.monotonic() - started > BATCH_SECS:
                return


class Fills:
    """This process's fills, one per digest. ``locks`` is the registry's lock manager (fill locks
    are ordinary named locks, held for as long as the transfer takes)."""

    def __init__(self, registry, locks):
        self.registry = registry
        self.locks = locks
        self._fills: dict[str, Fill] = {}
        self._guard = threading.Lock()
        part = getattr(registry.blob_store, "part_size", None)
        # On S3 a batch is one part, so each append writes one part object and no tail to re-read.
        self.batch = part or FS_BATCH
        self.poll = FOLLOW_POLL.get(registry.blob_store.name, FOLLOW_POLL_DEFAULT)
        # A try of the fill lock (what tells a follower its leader died) costs a round trip on Redis
        # and a billed conditional PUT on S3: at every poll only for local locks.
        every = {"memory": 0.0, "file": 0.0, "redis": 0.1}.get(locks.backend, 2.0)
        self.lock_every = max(1, round(every / self.poll))

    def join(self, ns: str, d: Digest, opener: Callable, stall: float, repo_key: str) -> Fill:
        """The fill of ``d`` in this process, started if none runs. ``opener()`` returns an
        :class:`~angos.cache.upstreams.Answer` whose response is a 200 with the blob's body, or raises
        an OciError; it runs only if this process ends up leading."""
        key = str(d)
        with self._guard:
            fill = self._fills.get(key)
            if fill is not None and fill.state in (STARTING, RUNNING):
                return fill
            fill = self._fills[key] = Fill(d, ns, stall)
        threading.Thread(target=self._drive, args=(fill, opener, repo_key), daemon=True,
                         name=f"fill:{key[:20]}").start()
        return fill

    def _drive(self, fill: Fill, opener: Callable, repo_key: str) -> None:
        try:
            self._run(fill, opener, repo_key)
        except OciError as exc:
            fill.fail(exc)
        except Exception as exc:  # noqa: BLE001 - a fill must end, whatever broke
            log.exception("fill of %s failed", fill.digest)
            fill.fail(BadGateway(f"fetching {fill.digest} failed: {exc}"))
        finally:
            if fill.state in (STARTING, RUNNING):
                fill.fail(Unavailable(f"fetching {fill.digest} stopped"))
            with self._guard:
                if self._fills.get(str(fill.digest)) is fill:
                    del self._fills[str(fill.digest)]

    def committed(self, d: Digest) -> bool:
        return self.registry.blob_store.exists(paths.blob_data(d))

    def _record(self, d: Digest) -> dict | None:
        try:
            rec = json.loads(self.registry.blob_store.get(paths.fill_record(d)))
            return rec if isinstance(rec, dict) and isinstance(rec.get("upload_id"), str) else None
        except (NotFound, ValueError):
            return None

    def _run(self, fill: Fill, opener: Callable, repo_key: str) -> None:
        d = fill.digest
        saw_record = False
        quiet_since = time.monotonic()
        last_seen = None
        turn = 0
        while True:
            if self.committed(d):
                fill.done()
                return
            if turn % self.lock_every == 0:
                try:
                    with self.locks.lock(f"fill:{d}", timeout=0):
                        if self.committed(d):
                            fill.done()
                            return
                        if saw_record and self._record(d) is None:
                            # The leader we followed ended without committing: its fill failed (its own
                            # readers were cut off too); a new request will try again.
                            raise BadGateway(f"fetching {d} from {fill.where or 'the upstream'} failed "
                                             f"in another process")
                        self._lead(fill, opener, repo_key)
                        return
                except LockTimeout:
                    pass
            turn += 1
            rec = self._record(d)
            if rec is not None:
                saw_record = True
                source = paths.upload_data(rec["upload_id"])
                try:
                    written = self.registry.blob_store.stat(source).size
                except NotFound:
                    written = 0  # committed or failed meanwhile: the next turn tells which
                size = rec.get("size") if isinstance(rec.get("size"), int) else None
                fill.where = rec.get("upstream") or fill.where
                if (source, written) != last_seen:
                    last_seen = (source, written)
                    quiet_since = time.monotonic()
                    fill.running(source, size, written)
            if time.monotonic() - quiet_since > fill.stall + MARGIN:
                raise Unavailable(f"{d} is being fetched by another process that reported no progress "
                                  f"for {fill.stall + MARGIN:g}s")
            time.sleep(self.poll)

    def _lead(self, fill: Fill, opener: Callable, repo_key: str) -> None:
        reg = self.registry
        d, ns = fill.digest, fill.namespace
        stale = self._record(d)
        if stale is not None:
            # A leader died mid-fill: its session can never complete.
            try:
                reg.blob_store.delete_prefix(paths.upload_dir(validate_upload_id(stale["upload_id"])))
            except OciError:
                pass  # not a session id we wrote: nothing of ours to remove
            reg.blob_store.delete(paths.fill_record(d))
        answer = opener()
        fill.where = answer.url
        resp = answer.response
        upload_id = None
        m.CACHE_FILLS_IN_PROGRESS.inc()
        try:
            length = resp.headers.get("Content-Length")
            size = count(length)
            if size is not None and size > reg.uploads.max_blob_size:
                raise BadGateway(f"{d} on upstream {answer.where()} is {size} bytes, over max_blob_size")
            upload_id = reg.uploads.start(ns, d.algorithm, counted=False)
            record = {"upload_id": upload_id, "size": size, "namespace": ns, "upstream": answer.url}
            reg.blob_store.put(paths.fill_record(d), json.dumps(record).encode())
            fill.running(paths.upload_data(upload_id), size)
            written = 0
            upstream_bytes = m.CACHE_UPSTREAM_BYTES.labels(repo_key)
            with reg.uploads.appending(ns, upload_id) as append:
                while True:
                    batch = _Batch(resp.raw, self.batch, fill.arrived)
                    try:
                        new = append(batch)
                    except OciError:
                        raise
                    except Exception as exc:  # noqa: BLE001 - requests, urllib3 and socket errors alike
                        raise BadGateway(f"reading {d} from upstream {answer.where()} failed after {written} "
                                         f"bytes: {exc}") from None
                    upstream_bytes.inc(new - written)
                    written = new
                    fill.progress(written)
                    if batch.eof:
                        break
            if size is not None and written != size:
                raise BadGateway(f"upstream {answer.where()} sent {written} bytes of {d}, not {size}")
            # Not a push: the manifests a fill stores are reported (actor cache-fill), its blobs are not.
            reg.uploads.complete(ns, upload_id, d, None, None, None, report=False)
            upload_id = None  # committed: the session is gone
            fill.done()
            log.info("fetched %s (%s bytes) from %s into %s", d, written, answer.where(), ns)
        except DigestInvalid as exc:
            raise BadGateway(f"upstream {answer.where()} sent bytes that do not match {d}: {exc.message}") from None
        except TooLarge:
            raise BadGateway(f"{d} on upstream {answer.where()} is larger than max_blob_size") from None
        finally:
            m.CACHE_FILLS_IN_PROGRESS.dec()
            resp.close()
            if upload_id is not None:
                reg.blob_store.delete_prefix(paths.upload_dir(upload_id))
            try:
                reg.blob_store.delete(paths.fill_record(d))
            except Exception:  # noqa: BLE001 - a stale record is overwritten by the next leader
                log.warning("could not remove the fill record of %s", d)

