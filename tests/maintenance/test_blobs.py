"""``scrub --blobs``: blob-index repair, reclaiming unowned bytes after the grace period,
and quarantining blobs whose bytes no longer match their digest."""

from __future__ import annotations

import hashlib
import os

from angos.oci.digest import Digest
from angos.registry import paths

from .conftest import backdate, blob_file, blob_status, data_path, lines, pullable, push, scrub


def _orphan_bytes(server, age_secs: float) -> str:
    """Bytes in the blob store that no namespace holds (what a crash mid-delete leaves)."""
    data = os.urandom(300)
    d = "sha256:" + hashlib.sha256(data).hexdigest()
    path = blob_file(server, d)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    backdate(path, age_secs)
    return d


def _index(server, d: str, ns: str):
    return data_path(server, paths.blob_index(Digest.parse(d), ns))


def test_unowned_bytes_past_the_grace_are_reclaimed_and_the_index_follows_the_grants(angos_factory):
    server = angos_factory()
    _, blobs = push(server, "nginx/app", "v1", "kept", layers=2)
    old, fresh = _orphan_bytes(server, 2 * 3600), _orphan_bytes(server, 0)
    _index(server, blobs[0], "ghost/ns").write_bytes(b"")   # stale: ghost/ns holds no grant
    _index(server, blobs[1], "nginx/app").unlink()          # missing: nginx/app does hold one

    dry = scrub(server, "--blobs", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert sorted(lines(dry.stdout, "AddIndexEntry") + lines(dry.stdout, "RemoveIndexEntry")
                  + lines(dry.stdout, "ReclaimBlob")) == sorted([
        f"AddIndexEntry digest={blobs[1]} namespace=nginx/app",
        f"RemoveIndexEntry digest={blobs[0]} namespace=ghost/ns",
        f"ReclaimBlob digest={old} size=300"])
    assert blob_file(server, old).exists() and _index(server, blobs[0], "ghost/ns").exists()
    assert not _index(server, blobs[1], "nginx/app").exists()

    real = scrub(server, "--blobs")
    assert real.returncode == 0, real.stderr
    assert "reclaimed=1 reclaimed_bytes=300 young=1 index_added=1 index_removed=1 corrupt=0" in real.stdout
    assert not blob_file(server, old).exists()
    assert blob_file(server, fresh).exists()   # inside the grace period: may be an upload completing
    assert not _index(server, blobs[0], "ghost/ns").exists()
    assert _index(server, blobs[1], "nginx/app").exists()
    assert pullable(server, "nginx/app", "v1")

    again = scrub(server, "--blobs", "--dry-run")
    assert "index_added=0 index_removed=0" in again.stdout and "reclaimed=0" in again.stdout

    # The grace period is an operator knob: with it at zero the fresh orphan goes too.
    zero = scrub(server, "--blobs", env={"ANGOS_SCRUB_BLOB_GRACE": "0s"})
    assert "reclaimed=1" in zero.stdout and not blob_file(server, fresh).exists()
    assert pullable(server, "nginx/app", "v1")


def test_corrupt_blob_is_quarantined_its_grants_revoked_and_the_run_fails_loudly(angos_factory):
    server = angos_factory()
    _, blobs = push(server, "nginx/app", "v1", "to be damaged", layers=2)
    push(server, "nginx/other", "v1", "to be damaged", layers=2)  # a second namespace owns the same blobs
    bad = blobs[1]
    path = blob_file(server, bad)
    original = path.read_bytes()
    path.write_bytes(b"X" * len(original))  # bit rot: same size, different content

    dry = scrub(server, "--blobs", "--dry-run")
    assert dry.returncode == 1
    assert lines(dry.stdout, "QuarantineBlob") == [
        f"QuarantineBlob digest={bad} actual=sha256:{hashlib.sha256(b'X' * len(original)).hexdigest()}"]
    assert path.exists() and blob_status(server, "nginx/app", bad) == 200

    real = scrub(server, "--blobs")
    assert real.returncode == 1
    assert "corrupt=1" in real.stdout
    assert "CORRUPT" in real.stderr and bad in real.stderr
    assert not path.exists()
    assert data_path(server, paths.quarantine(Digest.parse(bad))).read_bytes() == b"X" * len(original)
    for ns in ("nginx/app", "nginx/other"):
        assert blob_status(server, ns, bad) == 404
        assert blob_status(server, ns, blobs[0]) == 200
    # Once quarantined the store is clean again; a client re-push restores the blob.
    assert scrub(server, "--blobs").returncode == 0
    push(server, "nginx/app", "v1", "to be damaged", layers=2)
    assert pullable(server, "nginx/app", "v1")
