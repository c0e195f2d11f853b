"""``scrub --uploads AGE``: delete abandoned upload sessions.

An upload session (``uploads/<id>/`` in the blob store: ``info`` with
``started_at``, ``data`` with the bytes so far) is removed when

- it started more than AGE ago (``started_at``; the info object's mtime when
  the record is unreadable, so a corrupt session is still collected), and
- nothing was written to it for :data:`IDLE_SECS` (the newest mtime of its
  objects).

The idle floor exists because a client between two requests of one upload
(POST, PATCH..., PUT) is indistinguishable from one that gave up; without it
``--uploads 0s`` would break every push in flight, and a long-running upload
of a large blob would be cut off just because it *started* long ago. The
removal runs under the session's ``upload:<id>`` lock (the one every
append and completion holds) and re-checks idleness there, so a chunk being
written is never cut in half.

``--dry-run`` prints one line per session::

    DeleteUpload id=<id> namespace=<ns> age=<seconds>s
"""

from __future__ import annotations

import json
import time

from ..registry import paths
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
            if started is None or started < age or idle < IDLE_SECS:
                phase.count("kept")
                continue
            phase.act(f"DeleteUpload id={upload_id} namespace={ns} age={int(started)}s")
            if dry_run:
                phase.count("stale")
                continue
            with reg.locks.lock(f"upload:{upload_id}"):
                idle = _idle(blobs, upload_id)
                if idle is None or idle < IDLE_SECS:
                    phase.count("kept")
                    continue
                blobs.delete_prefix(paths.upload_dir(upload_id))
            phase.count("deleted")
        except Exception as exc:  # noqa: BLE001 - one bad session must not stop the sweep
            phase.problem("uploads: session %s: %s", upload_id, exc)
    return phase.finish(("stale", "kept") if dry_run else ("deleted", "kept"))
