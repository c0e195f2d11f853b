"""``scrub --uploads AGE``: delete abandoned upload sessions.

An upload session (``uploads/<id>/`` in the blob store: ``info`` with
``started_at``, ``data`` with the bytes so far) is removed when

- it started more than AGE ago (``started_at``; the info object's mtime when
  the record is unreadable, so a corrupt session is still collected), and
  nothing was written to it for :data:`IDLE_SECS` (the newest mtime of its
  objects); or
- nothing was written to it for ``[global] upload_session_idle_timeout``,
  whatever AGE says: the server already treats it as gone (it answers
  ``BLOB_UPLOAD_UNKNOWN`` and removes it on the next access), this only
  reclaims the bytes of sessions nobody comes back to.

A removed session's marker in ``upload-index/`` (what the per-namespace cap
counts) goes with it, and markers whose session no longer exists (a crash
between the two deletes) are dropped once a minute old. So are pull-through
fill records (``fills/``) whose session is gone: a fill killed mid-way leaves
both, and the session goes first, by the rules above.

The idle floor exists because a client between two requests of one upload
(POST, PATCH..., PUT) is indistinguishable from one that gave up; without it
``--uploads 0s`` would break every push in flight, and a long-running upload
of a large blob would be cut off just because it *started* long ago. The
removal runs under the session's ``upload:<id>`` lock (the one every
append and completion holds) and re-checks idleness there, so a chunk being
written is never cut in half.

``--dry-run`` prints one line per session or stray marker::

    DeleteUpload id=<id> namespace=<ns> age=<seconds>s idle=<seconds>s
    DeleteUploadMarker id=<id> entry=<namespace entry>
    DeleteFillRecord digest=<digest> id=<id>
"""

from __future__ import annotations

import json
import time

from ..registry import paths
from ..registry.upload_limits import started_from_id
from ..storage import NotFound
from .common import PhaseRun, age_secs, build_registry_for_scrub

IDLE_SECS = 60.0


def _idle(blobs, upload_id: str) -> float | None:
    """Seconds since the session was last written, None when it no longer exists."""
    newest = None
    for key in (paths.upload_info(upload_id), paths.upload_data(upload_id)):
        try:
            mtime = blobs.stat(key).mtime
        except NotFound:
            continue
        newest = mtime if newest is None else max(newest, mtime)
    return None if newest is None else time.time() - newest


def run(cfg, age: float, dry_run: bool, out=print, registry=None) -> int:
    reg = registry or build_registry_for_scrub(cfg)
    blobs = reg.blob_store
    timeout = reg.uploads.limits.idle_timeout
    phase = PhaseRun("uploads", dry_run, out)
    for upload_id in reg.uploads.list_sessions():
        phase.tick("sessions")
        try:
            idle = _idle(blobs, upload_id)
            if idle is None:
                continue  # completed or cancelled since we listed it
            try:
                info = json.loads(blobs.get(paths.upload_info(upload_id)))
                stamp, ns = info.get("started_at"), info.get("namespace")
            except (NotFound, ValueError, AttributeError):
                stamp, ns = None, None
            try:
                info_mtime = blobs.stat(paths.upload_info(upload_id)).mtime
            except NotFound:
                info_mtime = time.time() - idle
            started = age_secs(stamp, info_mtime)
            by_age = started is not None and started >= age and idle >= IDLE_SECS
            if not by_age and idle < timeout:
                phase.count("kept")
                continue
            phase.act(f"DeleteUpload id={upload_id} namespace={ns} age={int(started or 0)}s idle={int(idle)}s")
            if dry_run:
                phase.count("stale")
                continue
            floor = IDLE_SECS if by_age else timeout
            with reg.locks.lock(f"upload:{upload_id}"):
                idle = _idle(blobs, upload_id)
                if idle is None or idle < floor:
                    phase.count("kept")
                    continue
                blobs.delete_prefix(paths.upload_dir(upload_id))
                if isinstance(ns, str):
                    reg.uploads.limits.unmark(ns, upload_id)
            phase.count("deleted")
        except Exception as exc:  # noqa: BLE001 - one bad session must not stop the sweep
            phase.problem("uploads: session %s: %s", upload_id, exc)
    _stray_markers(blobs, phase)
    _stale_fill_records(blobs, phase)
    return phase.finish(("stale", "kept") if dry_run else ("deleted", "kept"))


def _stray_markers(blobs, phase: PhaseRun) -> None:
    for entry in blobs.children(paths.UPLOAD_INDEX):
        for upload_id in blobs.children(f"{paths.UPLOAD_INDEX}/{entry}"):
            phase.tick("markers")
            try:
                if _idle(blobs, upload_id) is not None:
                    continue  # the session exists
                started = started_from_id(upload_id)
                if started is not None and time.time() - started < IDLE_SECS:
                    continue  # a start in flight writes its marker before its session
                phase.act(f"DeleteUploadMarker id={upload_id} entry={entry}")
                phase.count("markers_removed")
                if not phase.dry_run:
                    blobs.delete(paths.upload_marker_entry(entry, upload_id))
            except Exception as exc:  # noqa: BLE001
                phase.problem("uploads: marker %s/%s: %s", entry, upload_id, exc)


def _stale_fill_records(blobs, phase: PhaseRun) -> None:
    for key in list(blobs.list(paths.FILLS)):
        phase.tick("fill records")
        try:
            try:
                upload_id = json.loads(blobs.get(key)).get("upload_id")
                mtime = blobs.stat(key).mtime
            except NotFound:
                continue  # the fill ended since we listed it
            except (ValueError, AttributeError):
                upload_id, mtime = None, 0.0
            if isinstance(upload_id, str) and _idle(blobs, upload_id) is not None:
                continue  # its session exists: a fill in flight, or one the sweep above keeps
            if time.time() - mtime < IDLE_SECS:
                continue  # a leader writes its record just after starting its session
            phase.act(f"DeleteFillRecord digest={key.split('/', 1)[-1].replace('/', ':')} id={upload_id}")
            phase.count("fill_records_removed")
            if not phase.dry_run:
                blobs.delete(key)
        except Exception as exc:  # noqa: BLE001
            phase.problem("uploads: fill record %s: %s", key, exc)
