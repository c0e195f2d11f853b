"""``scrub --orphan-grants AGE``: grants no manifest references are revoked once old enough."""

from __future__ import annotations

import json
from datetime import timedelta

from angos.oci.digest import Digest
from angos.registry import paths
from angos.registry.timestamps import format_ts, now

from .conftest import blob_file, blob_status, data_path, lines, push, scrub


def _age_grant(server, ns: str, d: str, hours: float) -> None:
    """Rewrite a grant record as if it had been written ``hours`` ago (time passing, not corruption)."""
    key = data_path(server, paths.grant(ns, Digest.parse(d)))
    key.write_text(json.dumps({"created_at": format_ts(now() - timedelta(hours=hours))}))


def test_blob_of_a_replicated_manifest_that_lost_lww_is_reclaimed_after_the_age_not_before(angos_factory):
    server = angos_factory()
    kept_digest, kept_blobs = push(server, "nginx/app", "v1", "local winner")
    # A replicated push: blobs first, then the manifest stamped with an author time older
    # than the local tag, so last-writer-wins rejects it and its blobs are owned by nothing.
    old = format_ts(now() - timedelta(days=1))
    _, lost_blobs = push(server, "nginx/app", "v1", "replicated loser", headers={"X-Angos-Source-Timestamp": old},
                         expect=409)
    assert all(blob_status(server, "nginx/app", d) == 200 for d in lost_blobs)

    young = scrub(server, "--orphan-grants", "1h")
    assert young.returncode == 0, young.stderr
    assert "revoked=0" in young.stdout and f"young={len(lost_blobs)}" in young.stdout
    assert all(blob_status(server, "nginx/app", d) == 200 for d in lost_blobs)

    for d in lost_blobs + kept_blobs:
        _age_grant(server, "nginx/app", d, hours=2)
    dry = scrub(server, "--orphan-grants", "1h", "--dry-run")
    assert sorted(line.split(" age=")[0] for line in lines(dry.stdout, "RevokeGrant")) == sorted(
        f"RevokeGrant namespace=nginx/app digest={d}" for d in lost_blobs)
    assert all(blob_status(server, "nginx/app", d) == 200 for d in lost_blobs)

    real = scrub(server, "--orphan-grants", "1h")
    assert real.returncode == 0, real.stderr
    assert f"revoked={len(lost_blobs)} blobs_deleted={len(lost_blobs)}" in real.stdout
    for d in lost_blobs:
        assert blob_status(server, "nginx/app", d) == 404
        assert not blob_file(server, d).exists()
    # The winner's blobs are referenced by its manifest: untouched, however old their grants.
    for d in kept_blobs:
        assert blob_status(server, "nginx/app", d) == 200


def test_bytes_another_namespace_still_owns_survive_a_revoked_grant(angos_factory):
    server = angos_factory()
    _, blobs = push(server, "nginx/a", "v1", "shared")
    # nginx/b uploads the same blobs but its manifest never arrives.
    from .conftest import manifest_body

    manifest_body(server, "nginx/b", "shared")
    for d in blobs:
        _age_grant(server, "nginx/b", d, hours=48)
    real = scrub(server, "--orphan-grants", "1d")
    assert real.returncode == 0, real.stderr
    assert f"revoked={len(blobs)} blobs_deleted=0" in real.stdout
    for d in blobs:
        assert blob_status(server, "nginx/b", d) == 404
        assert blob_status(server, "nginx/a", d) == 200
        assert blob_file(server, d).exists()
