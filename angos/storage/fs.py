"""Filesystem ObjectStore: objects are files under ``root_dir``.

Atomicity comes from writing to a unique temporary file in the same directory
and ``os.replace``-ing it into place; ``put_if_absent`` uses ``os.link`` so the
final name appears only if it did not exist. With ``sync_to_disk`` every write
is fsync'ed (file and directory) before it becomes visible.

Temporary files are named ``.tmp-<32 hex>``, whatever the final name: their
length never depends on the key (a suffix on the final name made names past
218 characters fail with ``ENAMETOOLONG``), and no stored name can look like
one (every name :mod:`angos.registry.paths` builds starts with a letter, a
digit or ``_``), so listings hide exactly the temporaries. Versions before
this wrote ``<name>.tmp-<32 hex>``; listings still hide leftovers of that
shape (a crash can leave them), and only that exact shape.

``append`` (upload data) writes large streams with ``O_DIRECT`` from aligned
buffers on a native thread, so uploads neither evict the page cache nor pay
for filling it (:mod:`angos.storage.direct`).

Deletes prune directories left empty, so a concurrent writer can see the
directory it just created vanish before its file lands in it (another worker
deleted the last sibling). Every "create parent, then create file" step
therefore retries on ``FileNotFoundError`` (:meth:`FsStore._in_dir`).
"""

from __future__ import annotations

import errno
import os
import re
import uuid
from typing import BinaryIO, Iterable, Iterator

from .base import NotFound, ObjectInfo, ObjectStore, StorageUnavailable
from .direct import append_stream

# A prune can only win the race a handful of times in a row; more means the
# path is really unusable and the error should surface.
_PRUNE_RETRIES = 20

_TMP_PREFIX = ".tmp-"
# What a crash in an older version could leave: the final name plus ".tmp-" and a uuid4 hex.
_LEGACY_TMP = re.compile(r"\.tmp-[0-9a-f]{32}$")


# A key that names no file: missing, below a file, a directory where a file was expected, or a
# name longer than the filesystem allows (no object can have it, so reads miss and deletes no-op).
_ABSENT = frozenset({errno.ENOENT, errno.ENOTDIR, errno.EISDIR, errno.ENAMETOOLONG})


def is_temporary(name: str) -> bool:
    """Whether a directory entry is an in-flight (or crashed) write rather than a stored object."""
    return name.startswith(_TMP_PREFIX) or _LEGACY_TMP.search(name) is not None


class FsStore(ObjectStore):
    name = "fs"

    def __init__(self, root_dir: str, sync_to_disk: bool = False, direct_io: bool = True):
        self.root = os.path.abspath(root_dir)
        self.sync = sync_to_disk
        self.direct_io = direct_io
        os.makedirs(self.root, exist_ok=True)
        st = os.stat(self.root)
        self._identity = (st.st_dev, st.st_ino)

    def _path(self, key: str) -> str:
        # Keys come from angos.registry.paths, which only admits validated names;
        # this check is a second line of defence against escaping the root.
        if key.startswith("/") or "\\" in key or any(p in ("..", ".", "") for p in key.rstrip("/").split("/")):
            raise ValueError(f"refusing unsafe storage key {key!r}")
        return os.path.join(self.root, key)

    def _tmp(self, path: str) -> str:
        return os.path.join(os.path.dirname(path), f"{_TMP_PREFIX}{uuid.uuid4().hex}")

    def _in_dir(self, path: str, op):
        """Create ``path``'s parent directory and run ``op()`` in it, retrying when a
        concurrent prune removes the directory in between."""
        for attempt in range(_PRUNE_RETRIES):
            try:
                os.makedirs(os.path.dirname(path), exist_ok=True)
                return op()
            except FileNotFoundError:
                if attempt == _PRUNE_RETRIES - 1:
                    raise

    def _fsync_dir(self, path: str) -> None:
        if self.sync:
            fd = os.open(os.path.dirname(path), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def get(self, key: str) -> bytes:
        try:
            with open(self._path(key), "rb") as fh:
                return fh.read()
        except OSError as exc:
            if exc.errno in _ABSENT:
                raise NotFound(key) from None
            raise

    def _write_tmp(self, path: str, chunks: Iterable[bytes]) -> tuple[str, int]:
        tmp = self._tmp(path)
        total = 0
        # Once the temporary file exists its directory is not empty, so no
        # prune can remove it until the file is renamed or unlinked.
        fh = self._in_dir(tmp, lambda: open(tmp, "wb"))
        try:
            with fh:
                for chunk in chunks:
                    fh.write(chunk)
                    total += len(chunk)
                if self.sync:
                    fh.flush()
                    os.fsync(fh.fileno())
        except BaseException:
            _unlink(tmp)
            raise
        return tmp, total

    def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        tmp, _ = self._write_tmp(path, (data,))
        os.replace(tmp, path)
        self._fsync_dir(path)

    def put_if_absent(self, key: str, data: bytes) -> bool:
        path = self._path(key)
        # Most calls find the object there (a grant or index entry written again): one stat instead
        # of creating, linking and removing a temporary file. The link below still decides races.
        if os.path.lexists(path):
            return False
        tmp, _ = self._write_tmp(path, (data,))
        try:
            os.link(tmp, path)
            self._fsync_dir(path)
            return True
        except FileExistsError:
            return False
        finally:
            _unlink(tmp)

    def write_stream(self, key: str, chunks: Iterable[bytes]) -> int:
        path = self._path(key)
        tmp, total = self._write_tmp(path, chunks)
        os.replace(tmp, path)
        self._fsync_dir(path)
        return total

    def append(self, key: str, chunks: Iterable[bytes]) -> int:
        path = self._path(key)
        if self.direct_io:
            # Creates the file first (in a directory a prune cannot remove meanwhile), then
            # streams: large bodies bypass the page cache (direct.py says why).
            self._in_dir(path, lambda: os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)))
            return append_stream(path, chunks, self.sync)
        with self._in_dir(path, lambda: open(path, "ab")) as fh:
            for chunk in chunks:
                fh.write(chunk)
            if self.sync:
                fh.flush()
                os.fsync(fh.fileno())
            return fh.tell()

    def truncate(self, key: str, size: int) -> None:
        """Cut an upload object back to ``size`` bytes (undo a failed append)."""
        try:
            os.truncate(self._path(key), size)
        except FileNotFoundError:
            pass

    def open_read(self, key: str, offset: int = 0) -> BinaryIO:
        try:
            fh = open(self._path(key), "rb")
        except OSError as exc:
            if exc.errno in _ABSENT:
                raise NotFound(key) from None
            raise
        if offset:
            fh.seek(offset)
        return fh

    def delete(self, key: str) -> None:
        _unlink(self._path(key))
        self._prune_empty(os.path.dirname(self._path(key)))

    def _prune_empty(self, directory: str) -> None:
        # Remove now-empty parent directories so listings stay meaningful
        # (a namespace with no content disappears from the catalog).
        while directory.startswith(self.root + os.sep) and directory != self.root:
            try:
                os.rmdir(directory)
            except OSError:
                return
            directory = os.path.dirname(directory)

    def delete_prefix(self, prefix: str) -> None:
        import shutil

        path = self._path(prefix.rstrip("/"))
        shutil.rmtree(path, ignore_errors=True)
        self._prune_empty(os.path.dirname(path))

    def stat(self, key: str) -> ObjectInfo:
        try:
            st = os.stat(self._path(key))
        except OSError as exc:
            if exc.errno in _ABSENT:
                raise NotFound(key) from None
            raise
        if not os.path.isfile(self._path(key)):
            raise NotFound(key)
        return ObjectInfo(st.st_size, st.st_mtime)

    def list(self, prefix: str) -> Iterator[str]:
        base = self._path(prefix.rstrip("/")) if prefix.strip("/") else self.root
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames.sort()
            rel = os.path.relpath(dirpath, self.root)
            for name in sorted(filenames):
                if is_temporary(name):
                    continue
                yield name if rel == "." else f"{rel}/{name}"

    def sizes(self, prefix: str) -> Iterator[tuple[str, int]]:
        """One ``stat`` per file (from ``scandir``), no second lookup per key."""
        base = self._path(prefix.rstrip("/")) if prefix.strip("/") else self.root
        pending = [base]
        while pending:
            directory = pending.pop()
            try:
                entries = list(os.scandir(directory))
            except OSError as exc:
                if exc.errno in _ABSENT:
                    continue
                raise
            for entry in entries:
                try:
                    if entry.is_dir(follow_symlinks=False):
                        pending.append(entry.path)
                    elif not is_temporary(entry.name):
                        yield os.path.relpath(entry.path, self.root), entry.stat(follow_symlinks=False).st_size
                except FileNotFoundError:
                    continue

    def children(self, prefix: str) -> list[str]:
        base = self._path(prefix.rstrip("/")) if prefix.strip("/") else self.root
        try:
            return sorted(n for n in os.listdir(base) if not is_temporary(n))
        except OSError as exc:
            if exc.errno in _ABSENT:
                return []
            raise

    def move(self, src: str, dst: str) -> None:
        s, d = self._path(src), self._path(dst)
        if not os.path.exists(s):
            raise NotFound(src)
        try:
            self._in_dir(d, lambda: os.replace(s, d))
        except FileNotFoundError:
            raise NotFound(src) from None
        self._fsync_dir(d)
        self._prune_empty(os.path.dirname(s))

    def local_path(self, key: str) -> str | None:
        return self._path(key)

    def check(self) -> None:
        if not os.path.isdir(self.root) or not os.access(self.root, os.W_OK):
            raise StorageUnavailable(f"{self.root} is not a writable directory")
        st = os.stat(self.root)
        if (st.st_dev, st.st_ino) != self._identity:
            # Unmounted, moved or replaced since start-up: serving from a fresh empty
            # directory would look healthy while every existing blob is missing.
            raise StorageUnavailable(f"{self.root} is no longer the directory Angos started with")


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError as exc:
        if exc.errno not in _ABSENT:
            raise
