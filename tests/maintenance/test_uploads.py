"""``scrub --uploads AGE``: abandoned upload sessions go; live and recent ones stay."""

from __future__ import annotations

import json
from datetime import timedelta

import requests

from angos.registry import paths
from angos.registry.timestamps import format_ts, now

from .conftest import backdate, data_path, lines, scrub


def _start(server, ns: str, data: bytes) -> str:
    r = requests.post(server.v2(f"{ns}/blobs/uploads/"))
    assert r.status_code == 202, r.text
    location = r.headers["Location"]
    r = requests.patch(server.url + location if location.startswith("/") else location, data=data,
                       headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 202, r.text
    return location.rstrip("/").split("/")[-1].split("?")[0]


def _abandon(server, upload_id: str, hours: float) -> None:
    """Make a session look started and last written ``hours`` ago."""
    info = data_path(server, paths.upload_info(upload_id))
    doc = json.loads(info.read_text())
    doc["started_at"] = format_ts(now() - timedelta(hours=hours))
    info.write_text(json.dumps(doc))
    for key in (paths.upload_info(upload_id), paths.upload_data(upload_id)):
        backdate(data_path(server, key), hours * 3600)


# These tests are about AGE: the idle expiry (test_upload_limits.py) would otherwise remove the
# sessions they backdate by hours before scrub sees them.
LONG_IDLE = '[global]\nupload_session_idle_timeout = "1d"\n'


def _status(server, ns: str, upload_id: str) -> int:
    return requests.get(server.v2(f"{ns}/blobs/uploads/{upload_id}")).status_code


def test_sessions_older_than_the_age_are_deleted_and_recent_ones_kept(angos_factory):
    server = angos_factory(extra=LONG_IDLE)
    stale = _start(server, "nginx/app", b"x" * 1000)
    recent_start = _start(server, "nginx/app", b"y" * 1000)
    live = _start(server, "nginx/app", b"z" * 1000)
    _abandon(server, stale, hours=3)
    _abandon(server, recent_start, hours=0.5)

    dry = scrub(server, "--uploads", "1h", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert [line.split(" age=")[0] for line in lines(dry.stdout, "DeleteUpload")] == [
        f"DeleteUpload id={stale} namespace=nginx/app"]
    assert _status(server, "nginx/app", stale) == 204

    real = scrub(server, "--uploads", "1h")
    assert real.returncode == 0, real.stderr
    assert "uploads: deleted=1 kept=2" in real.stdout
    assert _status(server, "nginx/app", stale) == 404
    assert not data_path(server, paths.upload_dir(stale)).exists()
    assert _status(server, "nginx/app", recent_start) == 204
    assert _status(server, "nginx/app", live) == 204


def test_zero_age_spares_a_session_written_moments_ago(angos_factory):
    """``--uploads 0s`` means "every idle session": one a client is between requests of survives."""
    server = angos_factory(extra=LONG_IDLE)
    live = _start(server, "nginx/app", b"a" * 100)
    idle = _start(server, "nginx/app", b"b" * 100)
    _abandon(server, idle, hours=0.1)
    real = scrub(server, "--uploads", "0s")
    assert real.returncode == 0, real.stderr
    assert _status(server, "nginx/app", idle) == 404
    assert _status(server, "nginx/app", live) == 204
    # The surviving session still completes into a pullable blob.
    data = b"a" * 100
    import hashlib

    d = "sha256:" + hashlib.sha256(data).hexdigest()
    r = requests.put(server.v2(f"nginx/app/blobs/uploads/{live}?digest={d}"))
    assert r.status_code == 201, r.text
    assert requests.get(server.v2(f"nginx/app/blobs/{d}")).content == data


def test_malformed_duration_is_a_one_line_error(angos_factory):
    server = angos_factory(start=False)
    r = scrub(server, "--uploads", "soon")
    assert r.returncode == 1
    assert r.stderr.strip().count("\n") == 0 and "--uploads" in r.stderr


def test_multipart_on_the_filesystem_backend_has_nothing_to_do_and_succeeds(angos_factory):
    server = angos_factory(start=False)
    r = scrub(server, "--multipart", "1d")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "multipart: nothing to do: the fs blob store has no multipart uploads"


def _v7(seconds_ago: float) -> str:
    """An upload id in the time-ordered layout the server hands out, started ``seconds_ago``."""
    import os
    import time
    import uuid

    ms = int((time.time() - seconds_ago) * 1000)
    return str(uuid.UUID(int=ms << 80 | 7 << 76 | 2 << 62 | int.from_bytes(os.urandom(7), "big")))


def test_sessions_idle_past_the_timeout_go_whatever_the_age_and_stray_markers_with_them(angos_factory):
    # An hour's timeout, and one session last written two hours ago (younger than the 30 days'
    # age limit): however slowly the scrubs below run, only that one is idle.
    server = angos_factory(extra='[global]\nupload_session_idle_timeout = "1h"\n')
    idle = _start(server, "nginx/app", b"a" * 100)
    _abandon(server, idle, 2)
    live = _start(server, "nginx/app", b"b" * 100)
    # Markers whose session is gone: one old enough to be stray, one a start may still be writing.
    stray, starting = _v7(120), _v7(1)
    for upload_id in (stray, starting):
        path = data_path(server, paths.upload_marker("nginx/app", upload_id))
        path.write_bytes(b"")

    dry = scrub(server, "--uploads", "30d", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert [line.split(" age=")[0] for line in lines(dry.stdout, "DeleteUpload")] == [
        f"DeleteUpload id={idle} namespace=nginx/app"]
    assert lines(dry.stdout, "DeleteUploadMarker") == [f"DeleteUploadMarker id={stray} entry=nginx%2Fapp"]
    assert data_path(server, paths.upload_dir(idle)).exists()

    real = scrub(server, "--uploads", "30d")
    assert real.returncode == 0, real.stderr
    assert "uploads: deleted=1 kept=1 markers_removed=1" in real.stdout, real.stdout
    assert not data_path(server, paths.upload_dir(idle)).exists()
    assert not data_path(server, paths.upload_marker("nginx/app", idle)).exists()
    assert not data_path(server, paths.upload_marker("nginx/app", stray)).exists()
    assert data_path(server, paths.upload_marker("nginx/app", starting)).exists()
    assert data_path(server, paths.upload_marker("nginx/app", live)).exists()
    assert _status(server, "nginx/app", live) == 204
