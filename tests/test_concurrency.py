"""Concurrency: many clients racing on one tag across 4 gunicorn workers.

Twenty pushers each push a different manifest (distinct config blob, one
shared layer uploaded by all of them at once, half of them monolithically and
half through upload sessions) to the same tag at the same
moment, while twenty pullers read that tag in a loop. Pinned: no 5xx, every
pulled manifest is one that was pushed (never a torn or mixed record), the tag
ends at one of the pushed digests, every pushed blob and manifest is still
readable by digest, and every metadata file left on disk parses.
"""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path

import pytest
import requests

NS = "race/app"
TAG = "latest"
PUSHERS = 20
PULLERS = 20
MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def manifest_for(config: bytes, layer: bytes) -> bytes:
    return json.dumps({
        "schemaVersion": 2,
        "mediaType": MANIFEST_TYPE,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha256(config),
                   "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": sha256(layer),
                    "size": len(layer)}],
    }).encode()


@pytest.fixture
def server(angos_factory):
    return angos_factory(workers=4)


def check_metadata_tree(root: Path) -> int:
    """Every file under ``repositories/`` parses; returns how many were checked."""
    checked = 0
    for path in root.rglob("*"):
        if not path.is_file() or "_locks" in path.parts:
            continue
        rel = path.relative_to(root)
        assert ".tmp-" not in path.name, f"temporary file left behind: {rel}"
        raw = path.read_bytes()
        if "revisions" in rel.parts:
            header, sep, body = raw.partition(b"\n")
            assert sep, f"{rel}: revision without a header line"
            assert "media_type" in json.loads(header), rel
            json.loads(body)
            assert hashlib.new(rel.parts[-2], body).hexdigest() == rel.name, f"{rel}: body does not match its name"
        elif "tags" in rel.parts:
            record = json.loads(raw)
            assert set(record) >= {"digest", "created_at"}, rel
        elif raw:
            json.loads(raw)
        checked += 1
    return checked


def test_concurrent_pushes_to_one_tag_while_pulling_stay_consistent(server):
    layer = b"shared layer " + bytes(range(256)) * 64
    configs = [json.dumps({"architecture": "amd64", "os": "linux", "pusher": i}).encode() for i in range(PUSHERS)]
    manifests = [manifest_for(c, layer) for c in configs]
    pushed = {sha256(m) for m in manifests}

    # The tag exists before the race so every pull has something to find.
    seed_config = b'{"seed": true}'
    seed = manifest_for(seed_config, layer)
    s = requests.Session()
    for blob in (seed_config, layer):
        assert s.post(server.v2(f"{NS}/blobs/uploads/?digest={sha256(blob)}"), data=blob).status_code == 201
    assert s.put(server.v2(f"{NS}/manifests/{TAG}"), data=seed,
                 headers={"Content-Type": MANIFEST_TYPE}).status_code == 201
    known = pushed | {sha256(seed)}

    failures: list[str] = []
    pulls = [0] * PULLERS
    start_blobs = threading.Barrier(PUSHERS)
    start_manifests = threading.Barrier(PUSHERS)
    pushers_done = threading.Event()

    def push(i: int) -> None:
        sess = requests.Session()
        try:
            start_blobs.wait(30)
            for blob in (layer, configs[i]):
                if i % 2:
                    r = sess.post(server.v2(f"{NS}/blobs/uploads/?digest={sha256(blob)}"), data=blob)
                else:
                    # Session upload, one connection per request, so its steps can
                    # land on different workers.
                    r = requests.post(server.v2(f"{NS}/blobs/uploads/"))
                    r = requests.patch(server.url + r.headers["Location"], data=blob)
                    r = requests.put(server.url + r.headers["Location"], params={"digest": sha256(blob)})
                if r.status_code != 201:
                    failures.append(f"pusher {i} blob: {r.status_code} {r.text[:200]}")
            start_manifests.wait(30)
            r = sess.put(server.v2(f"{NS}/manifests/{TAG}"), data=manifests[i],
                         headers={"Content-Type": MANIFEST_TYPE})
            if r.status_code != 201 or r.headers.get("Docker-Content-Digest") != sha256(manifests[i]):
                failures.append(f"pusher {i} manifest: {r.status_code} {r.text[:200]}")
        except Exception as exc:  # noqa: BLE001 - reported as a test failure below
            failures.append(f"pusher {i}: {exc!r}")

    def pull(i: int) -> None:
        sess = requests.Session()
        try:
            # Keep pulling until every pusher is done, and at least a few times.
            while not pushers_done.is_set() or pulls[i] < 5:
                r = sess.get(server.v2(f"{NS}/manifests/{TAG}"), headers={"Accept": MANIFEST_TYPE})
                pulls[i] += 1
                digest = sha256(r.content)
                if r.status_code != 200 or digest not in known or r.headers.get("Docker-Content-Digest") != digest:
                    failures.append(f"puller {i}: {r.status_code} {digest} {r.text[:200]}")
                    return
        except Exception as exc:  # noqa: BLE001
            failures.append(f"puller {i}: {exc!r}")

    pullers = [threading.Thread(target=pull, args=(i,)) for i in range(PULLERS)]
    pushers = [threading.Thread(target=push, args=(i,)) for i in range(PUSHERS)]
    for t in pullers + pushers:
        t.start()
    for t in pushers:
        t.join(120)
    pushers_done.set()
    for t in pullers:
        t.join(120)
    assert not failures, "\n".join(failures[:20])
    assert sum(pulls) >= PULLERS * 5

    final = requests.get(server.v2(f"{NS}/manifests/{TAG}"), headers={"Accept": MANIFEST_TYPE})
    assert final.status_code == 200
    assert sha256(final.content) in pushed

    for m in manifests:
        r = requests.get(server.v2(f"{NS}/manifests/{sha256(m)}"), headers={"Accept": MANIFEST_TYPE})
        assert r.status_code == 200 and r.content == m
    for blob in configs + [layer]:
        r = requests.get(server.v2(f"{NS}/blobs/{sha256(blob)}"))
        assert r.status_code == 200 and r.content == blob

    assert check_metadata_tree(server.workdir / "data" / "repositories") >= 2 * PUSHERS
    assert "Traceback" not in server.logs()
