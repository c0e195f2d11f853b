"""Crash safety: kill -9 the whole server in the middle of a 200 MiB upload.

Pinned: after a restart on the same data directory no partial blob is
visible (HEAD and GET answer BLOB_UNKNOWN, no file under ``blobs/`` carries the
digest), a fresh upload of the same blob succeeds and reads back with the
right digest, and the interrupted session can be resumed from the offset the
server reports (so what survived on disk is an exact prefix of what was sent).
"""

from __future__ import annotations

import threading
import time

import pytest
import requests

from .conftest import wait_for
from .streams import PseudoRandomBlob, SizedStream, hash_response

SIZE = 200 * 1024 * 1024
KILL_AFTER = 24 * 1024 * 1024   # bytes the server must have stored before the kill
NS = "crash/app"



def stored_size(path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


@pytest.mark.slow
def test_kill_9_during_upload_leaves_no_partial_blob_and_upload_can_restart(angos_factory):
    server = angos_factory(workers=2)
    blob = PseudoRandomBlob(SIZE)
    hexpart = blob.digest.split(":")[1]
    data_dir = server.workdir / "data"

    r = requests.post(server.v2(f"{NS}/blobs/uploads/"))
    assert r.status_code == 202
    location = server.url + r.headers["Location"]
    upload_id = r.headers["Location"].rstrip("/").rsplit("/", 1)[1]
    upload_file = data_dir / "uploads" / upload_id / "data"

    stop = threading.Event()
    outcome: list = []

    def slow_down(sent: int) -> None:
        # Full speed until the kill threshold, then a trickle so the request
        # is certainly still in flight when the server dies.
        if sent >= KILL_AFTER:
            time.sleep(0.05)  # a trickle: the request is still in flight when the server dies

    def upload() -> None:
        try:
            outcome.append(requests.patch(location, data=blob.chunks(after_each=slow_down, stop=stop),
                                          timeout=120))
        except requests.RequestException as exc:
            outcome.append(exc)

    sender = threading.Thread(target=upload)
    sender.start()
    try:
        wait_for(lambda: stored_size(upload_file) >= KILL_AFTER, what="the upload to reach the disk")
        assert not outcome, f"upload finished before the kill: {outcome}"
        server.kill()
    finally:
        stop.set()
        sender.join(60)
    assert outcome and not isinstance(outcome[0], requests.Response), "the upload survived the kill"

    server.start()

    head = requests.head(server.v2(f"{NS}/blobs/{blob.digest}"))
    assert head.status_code == 404
    get = requests.get(server.v2(f"{NS}/blobs/{blob.digest}"))
    assert get.status_code == 404
    assert get.json()["errors"][0]["code"] == "BLOB_UNKNOWN"
    assert not [p for p in (data_dir / "blobs").rglob("*") if hexpart in p.name]

    # A fresh upload of the same blob goes through and reads back intact.
    r = requests.post(server.v2(f"{NS}/blobs/uploads/"))
    assert r.status_code == 202
    r = requests.patch(server.url + r.headers["Location"], data=blob.chunks())
    assert r.status_code == 202, r.text
    assert r.headers["Range"] == f"0-{SIZE - 1}"
    r = requests.put(server.url + r.headers["Location"], params={"digest": blob.digest})
    assert r.status_code == 201, r.text
    with requests.get(server.v2(f"{NS}/blobs/{blob.digest}"), stream=True) as r:
        assert r.status_code == 200
        assert hash_response(r) == (blob.digest, SIZE)

    # The interrupted session reports how much survived; resuming from there
    # completes to the same digest, so the surviving bytes are an exact prefix.
    r = requests.get(location)
    assert r.status_code == 204
    offset = int(r.headers["Range"].split("-")[1]) + 1
    assert KILL_AFTER <= offset < SIZE
    r = requests.patch(location, data=SizedStream(blob.chunks(offset), SIZE - offset),
                       headers={"Content-Range": f"{offset}-{SIZE - 1}"})
    assert r.status_code == 202, r.text
    r = requests.put(location, params={"digest": blob.digest})
    assert r.status_code == 201, r.text
    assert "Traceback" not in server.logs()
