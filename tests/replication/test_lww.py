"""Receiving replicated writes: last-writer-wins on tags (SPEC 8.4)."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timedelta, timezone

import pytest
import requests

from angos.config import default_instance_name

from ..api.helpers import assert_oci_error

OCI = "application/vnd.oci.image.manifest.v1+json"
TS = "X-Angos-Source-Timestamp"


def _ts(dt: datetime) -> str:
    return dt.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _manifest(server, ns: str, seed: str) -> tuple[bytes, str]:
    cfg = json.dumps({"seed": seed}).encode()
    d = "sha256:" + hashlib.sha256(cfg).hexdigest()
    assert requests.post(server.v2(f"{ns}/blobs/uploads/?digest={d}"), data=cfg).status_code == 201
    body = json.dumps({"schemaVersion": 2, "mediaType": OCI,
                       "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": d,
                                  "size": len(cfg)}, "layers": []}).encode()
    return body, "sha256:" + hashlib.sha256(body).hexdigest()


def _put(server, ns, ref, body, ts: str | None = None):
    headers = {"Content-Type": OCI}
    if ts is not None:
        headers[TS] = ts
    return requests.put(server.v2(f"{ns}/manifests/{ref}"), data=body, headers=headers)


def _tag(server, ns, tag):
    r = requests.head(server.v2(f"{ns}/manifests/{tag}"))
    return r.headers.get("Docker-Content-Digest") if r.status_code == 200 else None


def _created_at(server, ns, tag) -> str:
    rec = server.workdir / "data" / "repositories" / ns / "_manifests" / "tags" / tag
    return json.loads(rec.read_text())["created_at"]


def test_replicated_put_older_than_local_tag_is_superseded(angos):
    ns = "lww/older"
    local, local_d = _manifest(angos, ns, "local")
    remote, _ = _manifest(angos, ns, "remote")
    assert _put(angos, ns, "v1", local).status_code == 201
    old = _ts(datetime.now(timezone.utc) - timedelta(hours=1))
    r = _put(angos, ns, "v1", remote, old)
    assert_oci_error(r, 409, "REPLICATION_SUPERSEDED")
    # The refusal names what won, so the sender can record what the downstream holds; a client
    # write's origin is the instance that accepted it (no instance_name configured: the host name).
    assert r.json()["errors"][0]["detail"] == {"tag": "v1", "digest": local_d,
                                               "author_time": _created_at(angos, ns, "v1"),
                                               "origin": default_instance_name()}
    assert _tag(angos, ns, "v1") == local_d


def test_replicated_put_newer_than_local_wins_and_keeps_author_time(angos):
    ns = "lww/newer"
    local, _ = _manifest(angos, ns, "local")
    remote, remote_d = _manifest(angos, ns, "remote")
    assert _put(angos, ns, "v1", local).status_code == 201
    # An author time just after the local tag's (and still in the past): stored verbatim.
    local_ts = datetime.fromisoformat(_created_at(angos, ns, "v1").replace("Z", "+00:00"))
    newer = local_ts + timedelta(microseconds=1)
    assert _put(angos, ns, "v1", remote, _ts(newer)).status_code == 201
    assert _tag(angos, ns, "v1") == remote_d
    assert _created_at(angos, ns, "v1") == _ts(newer)


def test_future_timestamp_is_clamped_to_receiver_now(angos):
    ns = "lww/future"
    body, d = _manifest(angos, ns, "future")
    future = datetime.now(timezone.utc) + timedelta(days=365)
    assert _put(angos, ns, "v1", body, _ts(future)).status_code == 201
    stored = datetime.fromisoformat(_created_at(angos, ns, "v1").replace("Z", "+00:00"))
    assert stored < datetime.now(timezone.utc) + timedelta(seconds=5)


def test_equal_timestamps_pick_the_larger_digest(angos):
    ns = "lww/tie"
    a, a_d = _manifest(angos, ns, "a")
    b, b_d = _manifest(angos, ns, "b")
    small, big = sorted([(a, a_d), (b, b_d)], key=lambda x: x[1])
    stamp = _ts(datetime.now(timezone.utc) - timedelta(seconds=10))
    assert _put(angos, ns, "t1", big[0], stamp).status_code == 201
    assert _put(angos, ns, "t1", small[0], stamp).status_code == 409  # smaller loses
    assert _put(angos, ns, "t2", small[0], stamp).status_code == 201
    assert _put(angos, ns, "t2", big[0], stamp).status_code == 201    # larger wins
    assert _tag(angos, ns, "t1") == _tag(angos, ns, "t2") == big[1]


def test_equal_digest_replay_is_accepted(angos):
    ns = "lww/replay"
    body, d = _manifest(angos, ns, "same")
    assert _put(angos, ns, "v1", body).status_code == 201
    old = _ts(datetime.now(timezone.utc) - timedelta(days=1))
    assert _put(angos, ns, "v1", body, old).status_code == 201
    assert _tag(angos, ns, "v1") == d


def test_an_empty_timestamp_is_an_ordinary_write(angos):
    ns = "lww/plain"
    first, _ = _manifest(angos, ns, "first")
    second, second_d = _manifest(angos, ns, "second")
    assert _put(angos, ns, "v1", first).status_code == 201
    assert _put(angos, ns, "v1", second, "").status_code == 201
    assert _tag(angos, ns, "v1") == second_d


@pytest.mark.parametrize("header", ["yesterday", "2026-13-45T99:00:00Z"])
def test_a_malformed_timestamp_is_refused_not_taken_for_a_client_write(angos, header):
    """Read as a client write, a garbled replicated write would skip last-writer-wins."""
    ns = "lww/garbled"
    first, first_d = _manifest(angos, ns, "first" + header)
    second, _ = _manifest(angos, ns, "second" + header)
    assert _put(angos, ns, "v1", first).status_code == 201
    r = _put(angos, ns, "v1", second, header)
    assert r.status_code == 400 and r.json()["errors"][0]["code"] == "UNSUPPORTED"
    assert _tag(angos, ns, "v1") == first_d


def test_replicated_tag_delete_older_than_local_is_superseded(angos):
    ns = "lww/del"
    body, d = _manifest(angos, ns, "keep")
    assert _put(angos, ns, "v1", body).status_code == 201
    old = _ts(datetime.now(timezone.utc) - timedelta(hours=1))
    assert_oci_error(requests.delete(angos.v2(f"{ns}/manifests/v1"), headers={TS: old}), 409,
                     "REPLICATION_SUPERSEDED")
    assert _tag(angos, ns, "v1") == d
    assert requests.delete(angos.v2(f"{ns}/manifests/v1"), headers={TS: _ts(datetime.now(timezone.utc))}
                           ).status_code == 202
    assert _tag(angos, ns, "v1") is None


def test_replicated_digest_delete_is_refused_while_a_newer_tag_points_at_it(angos):
    ns = "lww/deldigest"
    body, d = _manifest(angos, ns, "pointed")
    assert _put(angos, ns, "v1", body).status_code == 201
    old = _ts(datetime.now(timezone.utc) - timedelta(hours=1))
    r = requests.delete(angos.v2(f"{ns}/manifests/{d}"), headers={TS: old})
    assert r.status_code == 409 and r.json()["errors"][0]["code"] == "REPLICATION_SUPERSEDED"
    assert r.json()["errors"][0]["detail"] == {"tag": "v1", "digest": d, "author_time": _created_at(angos, ns, "v1"),
                                               "origin": default_instance_name()}
    assert requests.head(angos.v2(f"{ns}/manifests/{d}")).status_code == 200


def test_immutable_conflict_is_distinct_from_superseded(angos_factory):
    server = angos_factory(extra="[global]\nimmutable_tags = true\n")
    ns = "lww/immutable"
    a, _ = _manifest(server, ns, "a")
    b, _ = _manifest(server, ns, "b")
    assert _put(server, ns, "v1", a).status_code == 201
    r = _put(server, ns, "v1", b, _ts(datetime.now(timezone.utc)))
    assert r.status_code == 409
    assert r.json()["errors"][0]["code"] == "CONFLICT"
