"""Lock strategies for read-modify-write sequences on the metadata store.

``LockManager.lock(name)`` is a context manager that holds an exclusive lock
named ``name`` across every process that shares the strategy:

- ``memory``: one process only (gevent-aware once the process is patched).
- ``file``: ``flock`` on files under ``<metadata root>/_locks``, host-wide.
  Acquisition polls with ``LOCK_NB`` and sleeps between tries so a waiting
  greenlet never blocks the gevent loop.

Further strategies (redis, s3) register in :data:`STRATEGIES`.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import threading
import time
import weakref

from .. import metrics as m
from ..oci.errors import Unavailable


class LockTimeout(Unavailable):
    default_message = "timed out waiting for a metadata lock"


class LockManager:
    backend = "abstract"

    def lock(self, name: str):  # pragma: no cover - interface
        raise NotImplementedError

    def _acquired(self, started: float, ok: bool) -> None:
        m.LOCK_ACQUISITIONS.labels(self.backend, "acquired" if ok else "timeout").inc()
        m.LOCK_DURATION.labels(self.backend).observe((time.monotonic() - started) * 1000)

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
    def lock(self, name: str):
        with self._guard:
            lk = self._locks.get(name)
            if lk is None:
                lk = threading.Lock()
                self._locks[name] = lk
        started = time.monotonic()
        ok = lk.acquire(timeout=self.timeout)
        if self.instrument:
            self._acquired(started, ok)
        if not ok:
            raise LockTimeout(f"lock {name!r} not acquired within {self.timeout:.0f}s")
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
        # Hash names into a bounded set of lock files: names may be long or contain
        # '/', and a fixed set never needs cleaning up.
        h = hashlib.sha256(name.encode()).hexdigest()[:4]
        return os.path.join(self.directory, f"{h}.lock")

    @contextlib.contextmanager
    def lock(self, name: str):
        path = self._path(name)
        started = time.monotonic()
        with self._local.lock(path):
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            except FileNotFoundError:  # the lock directory was removed under us: recreate it
                os.makedirs(self.directory, exist_ok=True)
                fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                deadline = started + self.timeout
                delay = 0.0005
                while True:
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        break
                    except BlockingIOError:
                        if time.monotonic() > deadline:
                            self._acquired(started, False)
                            raise LockTimeout(f"lock {name!r} not acquired within {self.timeout:.0f}s") from None
                        time.sleep(delay)
                        delay = min(delay * 2, 0.02)
                self._acquired(started, True)
                try:
                    yield
                finally:
                    fcntl.flock(fd, fcntl.LOCK_UN)
            finally:
                os.close(fd)

    def check(self) -> None:
        if not os.access(self.directory, os.W_OK):
            raise Unavailable(f"lock directory {self.directory} is not writable")
