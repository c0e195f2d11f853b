"""``scrub --tombstones``: deletes older than the horizon are forgotten, newer ones kept."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import requests

from angos.registry import paths

from .conftest import OCI, data_path, lines, scrub


def _push(server, ns: str, tag: str, seed: str) -> bytes:
    import hashlib

    cfg = json.dumps({"seed": seed}).encode()
    d = "sha256:" + hashlib.sha256(cfg).hexdigest()
    assert requests.post(server.v2(f"{ns}/blobs/uploads/?digest={d}"), data=cfg).status_code == 201
    body = json.dumps({"schemaVersion": 2, "mediaType": OCI, "config": {
        "mediaType": "application/vnd.oci.image.config.v1+json", "digest": d, "size": len(cfg)},
        "layers": []}).encode()
    assert requests.put(server.v2(f"{ns}/manifests/{tag}"), data=body, headers={"Content-Type": OCI}).status_code == 201
    return body


def test_tombstones_past_the_horizon_are_removed_and_only_those(angos_factory):
    server = angos_factory(extra='[global.replication]\ntombstone_horizon = "1h"\n')
    ns = "nginx/app"
    _push(server, ns, "old", "o")
    body = _push(server, ns, "recent", "r")
    for tag in ("old", "recent"):
        assert requests.delete(server.v2(f"{ns}/manifests/{tag}")).status_code == 202
    old_file = data_path(server, paths.tag_tombstone(ns, "old"))
    doc = json.loads(old_file.read_text())
    stamp = (datetime.now(timezone.utc) - timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    doc["deleted_at"] = stamp
    old_file.write_text(json.dumps(doc))

    dry = scrub(server, "--tombstones", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert lines(dry.stdout, "RemoveTombstone") == [f"RemoveTombstone namespace={ns} tag=old deleted_at={stamp}"]
    assert old_file.exists()
    res = scrub(server, "--tombstones")
    assert res.returncode == 0 and "removed=1 kept=1" in res.stdout, res.stdout + res.stderr
    assert not old_file.exists()
    assert data_path(server, paths.tag_tombstone(ns, "recent")).exists()
    states = requests.get(server.url + f"/_ext/{ns}/_tags").json()["tags"]
    assert [s["name"] for s in states] == ["recent"]
    # What the horizon gives up: a replicated copy older than the forgotten delete is accepted again,
    # while one older than the remembered delete is still refused.
    old_ts = (datetime.now(timezone.utc) - timedelta(hours=3)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    hdrs = {"Content-Type": OCI, "X-Angos-Source-Timestamp": old_ts}
    assert requests.put(server.v2(f"{ns}/manifests/old"), data=body, headers=hdrs).status_code == 201
    assert requests.put(server.v2(f"{ns}/manifests/recent"), data=body, headers=hdrs).status_code == 409
