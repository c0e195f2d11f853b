"""``scrub --tags``, ``--manifests``, ``--referrers``: metadata repairs after damage a crash or
an operator could leave."""

from __future__ import annotations

import json

import requests

from angos.oci.digest import Digest
from angos.registry import paths

from .conftest import OCI, data_path, lines, pullable, push, scrub

MISSING = "sha256:" + "0" * 64


def _key(server, key: str):
    return data_path(server, key)


def test_dangling_and_corrupt_tags_stale_markers_and_referrer_entries_are_repaired(angos_factory):
    server = angos_factory()
    ns = "nginx/app"
    a, a_blobs = push(server, ns, "v1", "a")
    b, b_blobs = push(server, ns, "v2", "b")
    a_size = len(requests.get(server.v2(f"{ns}/manifests/v1"), headers={"Accept": OCI}).content)
    r, _ = push(server, ns, "sig", "r", subject={"mediaType": OCI, "digest": a, "size": a_size})
    A, B, R = Digest.parse(a), Digest.parse(b), Digest.parse(r)

    # Damage.
    _key(server, paths.tag(ns, "gone")).write_text(json.dumps({"digest": MISSING,
                                                               "created_at": "2026-01-01T00:00:00Z"}))
    _key(server, paths.tag(ns, "broken")).write_text("{not json")
    lost_marker = _key(server, paths.ref_marker(ns, Digest.parse(b_blobs[1]), B))
    lost_marker.unlink()
    stale_marker = _key(server, paths.ref_marker(ns, Digest.parse(a_blobs[0]), Digest.parse(MISSING)))
    stale_marker.write_bytes(b"")
    stale_referrer = _key(server, paths.referrer(ns, A, Digest.parse(MISSING)))
    stale_referrer.write_text(json.dumps({"mediaType": OCI, "digest": MISSING, "size": 1}))
    lost_referrer = _key(server, paths.referrer(ns, A, R))
    lost_referrer.unlink()

    dry = scrub(server, "--tags", "--manifests", "--referrers", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert sorted(lines(dry.stdout, "RemoveTag")) == [f"RemoveTag namespace={ns} tag=broken reason=corrupt",
                                                      f"RemoveTag namespace={ns} tag=gone reason=dangling"]
    assert lines(dry.stdout, "WriteMarker") == [f"WriteMarker namespace={ns} target={b_blobs[1]} manifest={b}"]
    assert lines(dry.stdout, "RemoveMarker") == [
        f"RemoveMarker namespace={ns} target={a_blobs[0]} manifest={MISSING}"]
    assert lines(dry.stdout, "RemoveReferrer") == [f"RemoveReferrer namespace={ns} subject={a} manifest={MISSING}"]
    assert lines(dry.stdout, "WriteReferrer") == [f"WriteReferrer namespace={ns} subject={a} manifest={r}"]
    assert not lost_marker.exists() and stale_marker.exists() and stale_referrer.exists()
    assert _key(server, paths.tag(ns, "gone")).exists()

    real = scrub(server, "--tags", "--manifests", "--referrers")
    assert real.returncode == 0, real.stderr
    assert "tags: removed=2 ok=3" in real.stdout
    assert "manifests: markers_written=1 markers_removed=1" in real.stdout
    assert "referrers: removed=1 written=1" in real.stdout
    assert "corrupt tag record" in real.stderr
    assert requests.get(server.v2(f"{ns}/tags/list")).json()["tags"] == ["sig", "v1", "v2"]
    assert lost_marker.exists() and not stale_marker.exists()
    listing = requests.get(server.v2(f"{ns}/referrers/{a}")).json()["manifests"]
    assert [m["digest"] for m in listing] == [r]
    assert all(pullable(server, ns, t) for t in ("v1", "v2", "sig"))

    clean = scrub(server, "--tags", "--manifests", "--referrers", "--dry-run")
    assert [line for line in clean.stdout.splitlines() if ":" not in line.split(" ")[0]] == []
    assert "removed=0" in clean.stdout and "markers_written=0 markers_removed=0" in clean.stdout


def test_unparseable_revision_is_reported_and_left_in_place(angos_factory):
    server = angos_factory()
    d, _ = push(server, "nginx/app", "v1", "fine")
    bad = _key(server, paths.revision("nginx/app", Digest.parse(d)))
    bad.write_bytes(b"garbage without a header")
    r = scrub(server, "--manifests")
    assert r.returncode == 1
    assert "unreadable=1" in r.stdout and "cannot be decoded" in r.stderr
    assert bad.read_bytes() == b"garbage without a header"
