"""Lock strategies for read-modify-write sequences on the metadata store.

``LockManager.lock(name, timeout=None)`` is a context manager that holds an
exclusive lock named ``name`` across every process that shares the strategy,
raising :class:`LockTimeout` when it cannot be had in time. ``timeout`` (seconds)
overrides the strategy's default wait; ``0`` tries once and never waits (a
pull-through fill asks "is anyone else fetching this blob?" that way):

- ``memory``: one process only (gevent-aware once the process is patched).
- ``file``: ``flock`` on files under ``<metadata root>/_locks``, host-wide.
  Acquisition polls with ``LOCK_NB`` and sleeps between tries so a waiting
  greenlet never blocks the gevent loop.

:class:`LeasedLocks` is the shared skeleton of the strategies that hold a
lock on a service under a lease (``redis_locks``, ``s3_locks``): greenlets of
one process queue locally first, acquisition retries with jitter, a
background renewer extends the lease while the lock is held, and release only
ever removes the holder's own lease. A process that just released a lock waits
one retry interval before taking it again, so other processes' waiters get their
turn under steady contention (``_courtesy``).
"""

from __future__ import annotations

import collections
import contextlib
import fcntl
import hashlib
import logging
import os
import random
import threading
import time
import uuid
import weakref

from .. import metrics as m
from ..oci.errors import Unavailable

log = logging.getLogger("angos.storage.locks")


class LockTimeout(Unavailable):
    default_message = "timed out waiting for a metadata lock"


class LockManager:
    backend = "abstract"

    def lock(self, name: str, timeout: float | None = None):  # pragma: no cover - interface
        raise NotImplementedError

    def _acquired(self, started: float, ok: bool) -> None:
        m.LOCK_ACQUISITIONS.labels(self.backend, "acquired" if ok else "timeout").inc()
        m.LOCK_DURATION.labels(self.backend).observe(time.monotonic() - started)

    def check(self) -> None:
        """Raise when the lock backend is unreachable."""


class MemoryLocks(LockManager):
    backend = "memory"

    def __init__(self, timeout: float = 60.0, instrument: bool = True):
        self.instrument = instrument
        self._locks: "weakref.WeakValueDictionary[str, threading.Lock]" = weakref.WeakValueDictionary()
        self._guard = threading.Lock()
        self.timeout = timeout

    @contextlib.contextmanager
    def lock(self, name: str, timeout: float | None = None):
        with self._guard:
            lk = self._locks.get(name)
            if lk is None:
                lk = threading.Lock()
                self._locks[name] = lk
        wait = self.timeout if timeout is None else timeout
        started = time.monotonic()
        ok = lk.acquire(timeout=wait) if wait > 0 else lk.acquire(blocking=False)
        if self.instrument and (ok or wait > 0):  # a refused try is an answer, not a timeout
            self._acquired(started, ok)
        if not ok:
            raise LockTimeout(f"lock {name!r} not acquired within {wait:.0f}s")
        try:
            yield
        finally:
            lk.release()


class FileLocks(LockManager):
    backend = "file"

    def __init__(self, directory: str, timeout: float = 60.0):
        self.directory = directory
        self.timeout = timeout
        os.makedirs(directory, exist_ok=True)
        self._local = MemoryLocks(timeout, instrument=False)  # serialise greenlets of this process first

    def _path(self, name: str) -> str:
        # One file per name (names may be long or contain '/', so they are hashed in full).
        # Sharing files between names would be unsafe: locks nest (an upload's lock, then
        # its blob's), and two nested names on one file deadlock on themselves.
        h = hashlib.sha256(name.encode()).hexdigest()[:32]
        return os.path.join(self.directory, f"{h}.lock")

    def _open_locked(self, path: str, deadline: float):
        """An fd holding ``flock`` on the file now at ``path``, or None at the deadline.

        The holder removes the file on release, so a lock won on a file that is no
        longer at ``path`` is worthless: close it and take the current one."""
        delay = 0.0005
        while True:
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            except FileNotFoundError:  # the lock directory was removed under us: recreate it
                os.makedirs(self.directory, exist_ok=True)
                continue
            try:
                while True:
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        break
                    except BlockingIOError:
                        if time.monotonic() >= deadline:
                            os.close(fd)
                            return None
                        time.sleep(delay)
                        delay = min(delay * 2, 0.02)
                try:
                    current = os.stat(path).st_ino == os.fstat(fd).st_ino
                except FileNotFoundError:
                    current = False
            except BaseException:
                os.close(fd)
                raise
            if current:
                return fd
            os.close(fd)

    @contextlib.contextmanager
    def lock(self, name: str, timeout: float | None = None):
        path = self._path(name)
        wait = self.timeout if timeout is None else timeout
        started = time.monotonic()
        with self._local.lock(name, wait):
            fd = self._open_locked(path, started + wait)
            if fd is None:
                if wait > 0:  # a refused try is an answer, not a timeout
                    self._acquired(started, False)
                raise LockTimeout(f"lock {name!r} not acquired within {wait:.0f}s")
            self._acquired(started, True)
            try:
                yield
            finally:
                # Remove the file while still holding it, so the directory holds only the
                # locks in use; a waiter that opened it sees it gone and retries.
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    pass
                fcntl.flock(fd, fcntl.LOCK_UN)
                os.close(fd)

    def check(self) -> None:
        if not os.access(self.directory, os.W_OK):
            raise Unavailable(f"lock directory {self.directory} is not writable")


class LeasedLocks(LockManager):
    """A lock held on a shared service under a lease, renewed while held.

    Subclasses provide the service calls; a *handle* is whatever the service
    needs to renew or release the holder's own lease (an ETag, or just True):

    - ``_key(name)``: the service-side key of lock ``name``;
    - ``_try_acquire(key, token)``: a handle, or None while someone else holds it;
    - ``_on_busy(key)``: called after a refused attempt (e.g. break an expired lease);
    - ``_renew(key, token, handle)``: the new handle, or None once the lease is lost;
    - ``_release(key, token, handle)``: remove the lease if it is still ours;
    - ``cfg`` with ``max_retries`` and ``retry_delay_ms``;
    - ``unavailable_errors`` (exception types meaning "service unreachable"),
      ``service`` (a name for messages) and ``renew_interval`` (seconds);
    - optionally ``outage`` (an :class:`angos.outage.Outage`): acquisitions report to it, so an
      unreachable service is logged once (and its return once) however many requests get 503.
    """

    unavailable_errors: tuple = ()
    service = "lock service"
    renew_interval = 1.0
    outage = None

    def __init__(self, cfg):
        # ``cfg`` has ``max_retries`` and ``retry_delay_ms``, read at each acquisition.
        self.cfg = cfg
        # Greenlets of this process wait here, so the service only sees contention between processes.
        self._local = MemoryLocks(timeout=max(60.0, cfg.max_retries * cfg.retry_delay_ms / 1000 * 4),
                                  instrument=False)
        # When each key was last released here (bounded): see _courtesy.
        self._released: collections.OrderedDict[str, float] = collections.OrderedDict()
        self._released_guard = threading.Lock()

    def _courtesy(self, key: str) -> None:
        """Let other processes in before taking back a lock this process just released.

        Greenlets of one process queue locally and the next one tries the service the moment the
        lock is released, while other processes' waiters retry only every ``retry_delay_ms``: under
        steady contention on one name they would lose every race until their retries ran out.
        Waiting out one retry interval (plus jitter) after our own release gives them their turn."""
        with self._released_guard:
            released = self._released.get(key)
        if released is None:
            return
        wait = 2 * self.cfg.retry_delay_ms / 1000 - (time.monotonic() - released)
        if wait > 0:
            time.sleep(wait)

    def _note_release(self, key: str) -> None:
        with self._released_guard:
            self._released[key] = time.monotonic()
            self._released.move_to_end(key)
            while len(self._released) > 4096:
                self._released.popitem(last=False)

    def _on_busy(self, key: str) -> None:
        pass

    def _unavailable(self, exc) -> Unavailable:
        return Unavailable(f"{self.service} unreachable: {exc}")

    @contextlib.contextmanager
    def lock(self, name: str, timeout: float | None = None):
        key = self._key(name)
        with self._local.lock(key, timeout):
            if timeout != 0:  # a try answers "is it free?" at once, courtesy or not
                self._courtesy(key)
            token = uuid.uuid4().hex
            handle = [self._acquire(name, key, token, once=timeout == 0)]
            stop = threading.Event()
            renewer = threading.Thread(target=self._keep_alive, args=(key, token, handle, stop), daemon=True,
                                       name=f"lock-renew:{name}")
            renewer.start()
            try:
                yield
            finally:
                stop.set()
                renewer.join(5)  # a renewal in flight ends first, so release sees the latest handle
                try:
                    self._release(key, token, handle[0])
                except self.unavailable_errors as exc:
                    log.warning("could not release lock %s on the %s: %s (it expires on its own)", name,
                                self.service, exc)
                self._note_release(key)

    def _acquire(self, name: str, key: str, token: str, once: bool = False):
        started = time.monotonic()
        retries, delay = (0 if once else self.cfg.max_retries), self.cfg.retry_delay_ms / 1000
        try:
            for attempt in range(retries + 1):
                handle = self._try_acquire(key, token)
                if handle is not None:
                    self._acquired(started, True)
                    if self.outage is not None:
                        self.outage.ok()
                    return handle
                self._on_busy(key)
                if attempt < retries:
                    # Jitter, so waiters do not retry in lock step.
                    time.sleep(delay * random.uniform(0.5, 1.5))
        except self.unavailable_errors as exc:
            if self.outage is not None:
                self.outage.failed(exc)
            m.LOCK_ACQUISITIONS.labels(self.backend, "error").inc()
            m.LOCK_DURATION.labels(self.backend).observe(time.monotonic() - started)
            raise self._unavailable(exc) from None
        if not once:  # a refused try is an answer, not a timeout
            self._acquired(started, False)
        raise LockTimeout(f"lock {name!r} still held elsewhere after {retries} retries")

    def _keep_alive(self, key: str, token: str, handle: list, stop: threading.Event) -> None:
        while not stop.wait(self.renew_interval):
            try:
                renewed = self._renew(key, token, handle[0])
            except self.unavailable_errors as exc:
                log.warning("could not renew lock %s on the %s: %s", key, self.service, exc)
                continue
            if renewed is None:
                log.error("lock %s was lost before its holder finished (expired or taken over)", key)
                return
            handle[0] = renewed
