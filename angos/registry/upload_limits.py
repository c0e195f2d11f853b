"""Bounds on upload sessions: at most N open per namespace, and idle ones expire.

A session started with ``POST …/blobs/uploads/`` (not a monolithic
``?digest=`` upload, which lives for one request) is *counted*: a marker
``upload-index/<namespace entry>/<upload id>`` is written in the blob store
next to ``uploads/<id>/`` and removed when the session completes, is
cancelled or expires. Contract of :class:`SessionLimits`:

- :meth:`admit` raises :class:`TooManyRequests` (429 ``TOOMANYREQUESTS``,
  with a ``retry_after`` hint) when the namespace already has
  ``max_sessions`` markers and none of them can be expired now.
- A session is *idle* when nothing was written to it for ``idle_timeout``
  seconds (the mtime of its bytes, which every PATCH moves). :meth:`expired`
  tells; :meth:`expire` removes the session and its marker under the
  session's ``upload:<id>`` lock after re-checking, so a chunk being written
  is never cut off. On S3 a single PATCH's bytes are committed when it ends,
  so the timeout must exceed the longest single upload request.

Cost. :meth:`admit` lists the namespace's markers: one directory read on a
filesystem, one S3 LIST per 1000 sessions; the marker is one more small
write per session start. Only at the cap does it look further, and then at
most once per process and namespace each time a session may have expired:
upload ids are time-ordered (the UUIDv7 layout), so sessions younger than the
timeout are skipped from the listing alone and only older ones cost a stat
or two. Concurrent starts are not serialised, so the cap can be exceeded by
the starts racing in the same instant; it bounds abuse, not exact counts.
"""

from __future__ import annotations

import math
import os
import time
import uuid
from collections import OrderedDict

from ..oci.errors import TooManyRequests
from ..storage import NotFound
from ..storage.locks import LockTimeout
from . import paths

_MS48 = (1 << 48) - 1


def new_upload_id() -> str:
    """A random upload id whose first 48 bits are the start time in ms (RFC 9562 UUIDv7 layout)."""
    rand = int.from_bytes(os.urandom(10), "big")
    value = ((time.time_ns() // 1_000_000) & _MS48) << 80 | 0x7 << 76 | ((rand >> 62) & 0xFFF) << 64 \
        | 0b10 << 62 | (rand & ((1 << 62) - 1))
    return str(uuid.UUID(int=value))


def started_from_id(upload_id: str) -> float | None:
    """Start time (Unix seconds) of an id from :func:`new_upload_id`; None for other ids."""
    try:
        u = uuid.UUID(upload_id)
    except ValueError:
        return None
    return (u.int >> 80) / 1000.0 if u.version == 7 else None


class SessionLimits:
    SWEEP_MEMORY = 1024  # namespaces whose next possible expiry a process remembers

    def __init__(self, blobs, locks, max_sessions: int, idle_timeout: float):
        self.blobs = blobs
        self.locks = locks
        self.max_sessions = max_sessions
        self.idle_timeout = idle_timeout
        self._due: "OrderedDict[str, float]" = OrderedDict()

    # -- counting

    def admit(self, ns: str) -> None:
        markers = self.blobs.children(paths.upload_markers_dir(ns))
        if len(markers) < self.max_sessions:
            return
        open_now, due = self._sweep(ns, markers)
        if open_now < self.max_sessions:
            return
        raise TooManyRequests(
            f"{ns} has {open_now} open upload sessions, the most allowed ({self.max_sessions}); "
            "complete or cancel some, or wait for idle ones to expire",
            detail={"retry_after": max(1, math.ceil(due - time.time()))})

    def mark(self, ns: str, upload_id: str) -> None:
        self.blobs.put(paths.upload_marker(ns, upload_id), b"")

    def unmark(self, ns: str, upload_id: str) -> None:
        self.blobs.delete(paths.upload_marker(ns, upload_id))

    def _sweep(self, ns: str, markers: list[str]) -> tuple[int, float]:
        """Expire what can be; returns (sessions still open, earliest time another may expire)."""
        now = time.time()
        due = self._due.get(ns)
        if due is not None and now < due:
            return len(markers), due  # nothing can have expired since the last sweep
        open_now, due = 0, math.inf
        for upload_id in markers:
            started = started_from_id(upload_id)
            if started is not None and now - started < self.idle_timeout:
                open_now += 1  # younger than the timeout: cannot be idle that long
                due = min(due, started + self.idle_timeout)
                continue
            last = self.last_activity(upload_id)
            if last is None:
                self.unmark(ns, upload_id)  # its session is gone (a crash between two deletes)
                continue
            if now - last < self.idle_timeout:
                open_now += 1
                due = min(due, last + self.idle_timeout)
            elif self.expire(ns, upload_id):
                continue
            else:  # written meanwhile, or a long request holds it: look again a little later
                open_now += 1
                due = min(due, now + min(self.idle_timeout, 60.0))
        # A session started from now on cannot expire before now + timeout: a safe bound to remember.
        due = min(due, now + self.idle_timeout)
        self._due[ns] = due
        self._due.move_to_end(ns)
        while len(self._due) > self.SWEEP_MEMORY:
            self._due.popitem(last=False)
        return open_now, due

    # -- idleness

    def expired(self, mtime: float) -> bool:
        return time.time() - mtime >= self.idle_timeout

    def last_activity(self, upload_id: str) -> float | None:
        """Newest mtime of the session's objects; None when it no longer exists."""
        newest = None
        for key in (paths.upload_data(upload_id), paths.upload_info(upload_id)):
            try:
                mtime = self.blobs.stat(key).mtime
            except NotFound:
                continue
            newest = mtime if newest is None else max(newest, mtime)
        return newest

    def expire(self, ns: str, upload_id: str) -> bool:
        """Remove an idle session and its marker; False when it was written meanwhile or is busy."""
        try:
            with self.locks.lock(f"upload:{upload_id}"):
                last = self.last_activity(upload_id)
                if last is not None and not self.expired(last):
                    return False
                self.blobs.delete_prefix(paths.upload_dir(upload_id))
                self.unmark(ns, upload_id)
        except LockTimeout:
            return False  # a request holds the session: it is not idle
        return True
