"""``scrub --blobs --uploads 0s`` running over and over while clients push: nothing in flight
is reclaimed. The blob grace period is set to zero here, so only the ``blob:<digest>`` lock
and the re-checks under it stand between scrub and a push that is completing."""

from __future__ import annotations

import hashlib
import json
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from .conftest import CONFIG, LAYER, OCI, pullable, scrub

CLIENTS = 10
IMAGES_PER_CLIENT = 6
SCRUBBERS = 2
SHARED = b"a base layer every client pushes " * 512


def _upload(session: requests.Session, server, ns: str, data: bytes, chunked: bool) -> dict:
    d = "sha256:" + hashlib.sha256(data).hexdigest()
    if not chunked:
        r = session.post(server.v2(f"{ns}/blobs/uploads/?digest={d}"), data=data)
        assert r.status_code == 201, r.text
    else:
        r = session.post(server.v2(f"{ns}/blobs/uploads/"))
        assert r.status_code == 202, r.text
        loc = r.headers["Location"]
        loc = server.url + loc if loc.startswith("/") else loc
        half = len(data) // 2
        r = session.patch(loc, data=data[:half], headers={"Content-Type": "application/octet-stream",
                                                          "Content-Range": f"0-{half - 1}"})
        assert r.status_code == 202, r.text
        loc = r.headers["Location"]
        loc = server.url + loc if loc.startswith("/") else loc
        sep = "&" if "?" in loc else "?"
        r = session.put(f"{loc}{sep}digest={d}", data=data[half:])
        assert r.status_code == 201, r.text
    return {"mediaType": LAYER, "digest": d, "size": len(data)}


def _client(server, n: int) -> list[tuple[str, str, str]]:
    pushed = []
    with requests.Session() as s:
        for i in range(IMAGES_PER_CLIENT):
            ns = f"load/c{n}"
            cfg = _upload(s, server, ns, json.dumps({"client": n, "image": i}).encode(), chunked=False)
            cfg["mediaType"] = CONFIG
            layers = [_upload(s, server, ns, SHARED, chunked=bool(i % 2)),
                      _upload(s, server, ns, f"client {n} image {i} ".encode() * 700, chunked=bool((i + n) % 2))]
            body = json.dumps({"schemaVersion": 2, "mediaType": OCI, "config": cfg, "layers": layers}).encode()
            r = s.put(server.v2(f"{ns}/manifests/v{i}"), data=body, headers={"Content-Type": OCI})
            assert r.status_code == 201, r.text
            pushed.append((ns, f"v{i}", "sha256:" + hashlib.sha256(body).hexdigest()))
    return pushed


@pytest.mark.slow
def test_scrub_blobs_and_uploads_never_break_concurrent_pushes(angos_factory):
    server = angos_factory(workers=2)
    stop = threading.Event()
    runs: list = []

    def scrub_loop():
        while not stop.is_set():
            runs.append(scrub(server, "--blobs", "--uploads", "0s", env={"ANGOS_SCRUB_BLOB_GRACE": "0s"}))

    loopers = [threading.Thread(target=scrub_loop) for _ in range(SCRUBBERS)]
    for t in loopers:
        t.start()
    try:
        with ThreadPoolExecutor(CLIENTS) as pool:
            results = [f.result() for f in [pool.submit(_client, server, n) for n in range(CLIENTS)]]
    finally:
        stop.set()
        for t in loopers:
            t.join()
    pushed = [p for r in results for p in r]
    print(f"{len(runs)} scrub runs overlapped the pushes")
    assert len(pushed) == CLIENTS * IMAGES_PER_CLIENT
    runs.append(scrub(server, "--blobs", "--uploads", "0s", env={"ANGOS_SCRUB_BLOB_GRACE": "0s"}))
    assert len(runs) >= 2, "scrub never overlapped the pushes"
    for r in runs:
        assert r.returncode == 0, r.stderr
        assert "reclaimed=0" in r.stdout and "corrupt=0" in r.stdout
    for ns, tag, d in pushed:
        assert requests.head(server.v2(f"{ns}/manifests/{tag}")).headers.get("Docker-Content-Digest") == d
        assert pullable(server, ns, tag), (ns, tag)
