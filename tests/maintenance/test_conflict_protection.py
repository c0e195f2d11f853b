"""The loser of a replication conflict survives ``angos scrub`` (retention, grant sweep, blob GC)
for ``conflict_protection`` after the conflict was recorded, and is collected after it; the log's
records are trimmed by ``scrub --tombstones`` past the longer of that window and the tombstone horizon.

"After" is made deterministic by moving a record into the past (its time is its name), never by
waiting.
"""

from __future__ import annotations

import json
from datetime import timedelta

import requests

from angos.registry import paths
from angos.registry.timestamps import format_ts, now
from angos.replication.conflicts import record_id, record_time

from ..replication.conftest import mesh  # noqa: F401  (the fixture, used here too)
from ..replication.test_conflicts import records
from ..replication.test_tombstones import HELD, settle
from .conftest import OCI, blob_file, data_path, lines, manifest_body, pullable, push, scrub

KEEP_TAGGED = """
[global.retention_policy]
rules = ['image.tag != null']
"""
GC = ("--retention", "--orphan-grants", "0s", "--blobs")
NO_GRACE = {"ANGOS_SCRUB_BLOB_GRACE": "0s"}


def backdate(server, rid: str, days: float) -> str:
    """Move conflict record ``rid`` ``days`` into the past; returns its new id."""
    old = data_path(server, paths.conflict(rid))
    doc = json.loads(old.read_text())
    at = record_time(rid) - timedelta(days=days)
    doc["id"] = record_id(at, rid.split("-", 1)[1])
    doc["recorded_at"] = format_ts(at)
    data_path(server, paths.conflict(doc["id"])).write_text(json.dumps(doc))
    old.unlink()
    return doc["id"]


def _summary(out: str, phase: str) -> str:
    return next(line for line in out.splitlines() if line.startswith(f"{phase}: "))


def test_the_senders_loser_survives_scrub_inside_the_window_and_is_collected_after(mesh):
    a, b = mesh(2, extra=HELD + KEEP_TAGGED)
    ns = "nginx/app"
    loser, loser_blobs = push(a, ns, "v1", "the loser", layers=2)
    winner, _ = push(b, ns, "v1", "the winner")
    settle([a, b], first=[a])  # b refuses a's push; b's push then overwrites a: the loser is untagged on a
    assert requests.head(a.v2(f"{ns}/manifests/v1")).headers["Docker-Content-Digest"] == winner
    [rec] = records(a)
    assert rec["loser"] == {"digest": loser, "author_time": rec["loser"]["author_time"], "origin": "instance-a",
                            "stored": True}

    res = scrub(a, *GC, env=NO_GRACE)
    assert res.returncode == 0, res.stderr
    assert "losers=1" in _summary(res.stdout, "retention") and "deleted=0" in _summary(res.stdout, "retention")
    assert pullable(a, ns, loser)
    assert all(blob_file(a, d).exists() for d in loser_blobs)

    backdate(a, rec["id"], days=8)  # the default window is 7 days
    res = scrub(a, *GC, env=NO_GRACE)
    assert res.returncode == 0, res.stderr
    assert "losers=0" in _summary(res.stdout, "retention") and "deleted=1" in _summary(res.stdout, "retention")
    assert f"DeleteManifest namespace={ns} digest={loser}" in res.stderr
    assert requests.head(a.v2(f"{ns}/manifests/{loser}")).status_code == 404
    assert not any(blob_file(a, d).exists() for d in loser_blobs)
    assert pullable(a, ns, "v1")  # the winner is untouched


def test_a_loser_the_receiver_stored_is_protected_there_too(angos_factory):
    server = angos_factory(extra=KEEP_TAGGED)
    ns = "protect/receiver"
    body, loser, loser_blobs = manifest_body(server, ns, "already here by digest", layers=1)
    assert requests.put(server.v2(f"{ns}/manifests/{loser}"), data=body,
                        headers={"Content-Type": OCI}).status_code == 201
    push(server, ns, "v1", "the local tag")
    stale = format_ts(now() - timedelta(hours=1))
    r = requests.put(server.v2(f"{ns}/manifests/v1"), data=body,
                     headers={"Content-Type": OCI, "X-Angos-Source-Timestamp": stale})
    assert r.status_code == 409
    [rec] = records(server)
    assert rec["loser"]["digest"] == loser and rec["loser"]["stored"] is True

    # Without the conflict the untagged manifest would go: the dry run says it stays.
    res = scrub(server, "--retention", "--dry-run")
    assert lines(res.stdout, "DeleteManifest") == [] and "losers=1" in _summary(res.stdout, "retention")

    backdate(server, rec["id"], days=8)
    res = scrub(server, *GC, env=NO_GRACE)
    assert res.returncode == 0, res.stderr
    assert requests.head(server.v2(f"{ns}/manifests/{loser}")).status_code == 404
    assert not any(blob_file(server, d).exists() for d in loser_blobs)


def test_a_zero_window_protects_nothing(angos_factory):
    server = angos_factory(extra=KEEP_TAGGED + '\n[global.replication]\nconflict_protection = "0s"\n')
    ns = "protect/zero"
    body, loser, _ = manifest_body(server, ns, "by digest", layers=1)
    assert requests.put(server.v2(f"{ns}/manifests/{loser}"), data=body,
                        headers={"Content-Type": OCI}).status_code == 201
    push(server, ns, "v1", "local")
    r = requests.put(server.v2(f"{ns}/manifests/v1"), data=body,
                     headers={"Content-Type": OCI, "X-Angos-Source-Timestamp": format_ts(now() - timedelta(hours=1))})
    assert r.status_code == 409 and len(records(server)) == 1
    res = scrub(server, "--retention", "--dry-run")
    assert lines(res.stdout, "DeleteManifest") == [f"DeleteManifest namespace={ns} digest={loser}"]


def test_scrub_tombstones_trims_records_past_the_longer_horizon(angos_factory):
    server = angos_factory()
    ns = "protect/trim"
    stale = {"X-Angos-Source-Timestamp": format_ts(now() - timedelta(hours=1))}
    for tag in ("fresh", "ten-days", "old"):
        push(server, ns, tag, f"local {tag}")
        push(server, ns, tag, f"stale {tag}", headers=stale, expect=409)
    ids = {rec["tag"]: rec["id"] for rec in records(server)}
    ids["ten-days"] = backdate(server, ids["ten-days"], days=10)  # past the 7d window, inside the 30d horizon
    ids["old"] = backdate(server, ids["old"], days=31)

    res = scrub(server, "--tombstones", "--dry-run")
    assert res.returncode == 0, res.stderr
    assert lines(res.stdout, "RemoveConflictRecord") == [
        f"RemoveConflictRecord id={ids['old']} namespace={ns} tag=old"]
    assert len(records(server)) == 3

    res = scrub(server, "--tombstones")
    assert res.returncode == 0, res.stderr
    assert "removed=1" in _summary(res.stdout, "conflicts")
    assert [rec["tag"] for rec in records(server)] == ["fresh", "ten-days"]
