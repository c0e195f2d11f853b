"""Issue 12 #1: the longest valid namespace names, and the blob index that must never lose a claim.

Every test drives a real server over HTTP and runs the real ``angos scrub``;
storage is inspected through the same :class:`ObjectStore` classes the server
uses (a filesystem root, or S3 on a moto server), never mocked.

- The longest valid names (255 characters: 128 one-letter components, one
  255-letter component, and names either side of the 200-byte entry bound)
  push, pull, mount (with and without ``from``), delete and scrub cleanly,
  on the filesystem and on S3, and no stored file name exceeds the bound.
- A write that fails between a namespace's index entry and its grant leaves
  either nothing or an entry without a grant: never a grant that a sibling's
  delete or scrub can strip of its bytes.
- What earlier versions left behind keeps working: a grant whose index entry
  was never written (the bug) is re-indexed by scrub, and a long entry in the
  old unbounded form still protects its bytes and is rewritten by scrub.
- ``scrub --blobs`` reports a manifest whose blob bytes are gone.
"""

from __future__ import annotations

import hashlib
import json
import os

import pytest
import requests

from angos.oci.digest import Digest
from angos.registry import paths
from angos.storage.fs import FsStore

from ..conftest import make_bucket
from .conftest import CONFIG, LAYER, OCI, lines, scrub

LONG_NAMES = {
    "components": "/".join(["a"] * 128),         # 255 chars; its readable index entry would be 509 bytes
    "one-component": "x" * 255,                  # a 255-byte directory name, the limit itself
    "legacy-range": "c" * 100 + "/" + "d" * 105,  # 206 chars: written readable (208 bytes) by old versions
}
AT_BOUND = "e" * 98 + "/" + "f" * 99             # readable entry exactly 200 bytes: stays readable


def _s3_config(endpoint: str, bucket: str) -> str:
    from tests.storage.conftest import s3_server_config

    return s3_server_config(0, endpoint, bucket, redirect=False, lock="").replace("port = 0", "port = @PORT@")


@pytest.fixture(params=["fs", "s3"])
def backend(request, angos_factory):
    """(server, blob store, metadata store) with the stores opened the way the server opens them."""
    if request.param == "fs":
        server = angos_factory()
        store = FsStore(str(server.workdir / "data"))
        return server, store, store
    from tests.storage.conftest import s3_store

    endpoint = request.getfixturevalue("moto_server")
    bucket = make_bucket(endpoint)
    server = angos_factory(config_text=_s3_config(endpoint, bucket))
    return server, s3_store(endpoint, bucket, "blobs"), s3_store(endpoint, bucket, "meta")


def _post(server, ns: str, data: bytes) -> requests.Response:
    d = "sha256:" + hashlib.sha256(data).hexdigest()
    return requests.post(server.v2(f"{ns}/blobs/uploads/?digest={d}"), data=data)


def _push_blob(server, ns: str, data: bytes) -> str:
    r = _post(server, ns, data)
    assert r.status_code == 201, r.text
    return r.headers["Docker-Content-Digest"]


def _chunked(server, ns: str, data: bytes) -> str:
    """POST, two PATCHes, PUT: the session path with a long name."""
    d = "sha256:" + hashlib.sha256(data).hexdigest()
    r = requests.post(server.v2(f"{ns}/blobs/uploads/"))
    assert r.status_code == 202, r.text
    loc = server.url + r.headers["Location"]
    half = len(data) // 2
    for start, part in ((0, data[:half]), (half, data[half:])):
        r = requests.patch(loc, data=part, headers={"Content-Range": f"{start}-{start + len(part) - 1}"})
        assert r.status_code == 202, r.text
        loc = server.url + r.headers["Location"]
    r = requests.put(f"{loc}?digest={d}")
    assert r.status_code == 201, r.text
    return d


def _manifest(config: bytes, layers: list[bytes]) -> bytes:
    desc = [{"mediaType": LAYER, "digest": "sha256:" + hashlib.sha256(b).hexdigest(), "size": len(b)}
            for b in layers]
    return json.dumps({"schemaVersion": 2, "mediaType": OCI, "config": {
        "mediaType": CONFIG, "digest": "sha256:" + hashlib.sha256(config).hexdigest(), "size": len(config)},
        "layers": desc}).encode()


def _pull(server, ns: str, ref: str, expected: bytes) -> None:
    r = requests.get(server.v2(f"{ns}/manifests/{ref}"), headers={"Accept": OCI})
    assert r.status_code == 200, (ns, r.text)
    assert r.content == expected
    doc = r.json()
    for desc in [doc["config"], *doc["layers"]]:
        b = requests.get(server.v2(f"{ns}/blobs/{desc['digest']}"))
        assert b.status_code == 200, (ns, desc["digest"], b.text)
        assert "sha256:" + hashlib.sha256(b.content).hexdigest() == desc["digest"]


def _head(server, ns: str, d: str) -> int:
    return requests.head(server.v2(f"{ns}/blobs/{d}")).status_code


def _file_names_are_bounded(*stores) -> None:
    for store in stores:
        for key in store.list(""):
            parts = key.split("/")
            assert len(parts[-1]) <= paths.MAX_FILE_NAME, key
            assert all(len(p) <= 255 for p in parts), key


@pytest.mark.parametrize("which", sorted(LONG_NAMES))
def test_longest_names_push_pull_mount_delete_and_scrub(backend, which):
    server, blobs, meta = backend
    long_ns, other_long, sibling = LONG_NAMES[which], AT_BOUND, "short/sibling"
    config, shared, own = b'{"os":"linux","n":"%s"}' % which.encode(), os.urandom(3000), os.urandom(2000)
    d_config = _push_blob(server, long_ns, config)
    d_shared = _push_blob(server, long_ns, shared)
    d_own = _chunked(server, long_ns, own)
    body = _manifest(config, [shared, own])
    r = requests.put(server.v2(f"{long_ns}/manifests/v1"), data=body, headers={"Content-Type": OCI})
    assert r.status_code == 201, r.text
    _pull(server, long_ns, "v1", body)
    assert long_ns in requests.get(server.v2("_catalog")).json()["repositories"]

    # Mount into another long name, naming the source, and into the sibling without naming it
    # (which reads the long name back out of the blob index).
    r = requests.post(server.v2(f"{other_long}/blobs/uploads/?mount={d_own}&from={long_ns}"))
    assert r.status_code == 201, r.text
    r = requests.post(server.v2(f"{sibling}/blobs/uploads/?mount={d_own}"))
    assert r.status_code == 201, r.text
    assert _push_blob(server, sibling, shared) == d_shared

    # The sibling drops its claims: the long namespace's bytes stay.
    for d in (d_shared, d_own):
        assert requests.delete(server.v2(f"{sibling}/blobs/{d}")).status_code == 202
        assert _head(server, sibling, d) == 404
    _pull(server, long_ns, "v1", body)
    _file_names_are_bounded(blobs, meta)

    dry = scrub(server, "--blobs", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "index_added=0 index_removed=0" in dry.stdout and "problems=0" in dry.stdout, dry.stdout
    assert "missing=0" in dry.stdout

    # The long namespace deletes everything; bytes go once their last holder lets go.
    assert requests.delete(server.v2(f"{long_ns}/manifests/{Digest.of(body)}")).status_code == 202
    for d in (d_config, d_shared, d_own):
        assert requests.delete(server.v2(f"{long_ns}/blobs/{d}")).status_code == 202
        assert _head(server, long_ns, d) == 404
    assert blobs.exists(paths.blob_data(Digest.parse(d_own)))       # other_long still holds it
    assert not blobs.exists(paths.blob_data(Digest.parse(d_shared)))
    assert requests.delete(server.v2(f"{other_long}/blobs/{d_own}")).status_code == 202
    assert not blobs.exists(paths.blob_data(Digest.parse(d_own)))
    assert not meta.children(paths.blob_index_dir(Digest.parse(d_own)))

    real = scrub(server, "--blobs")
    assert real.returncode == 0, real.stderr
    assert "reclaimed=0" in real.stdout and "index_added=0 index_removed=0" in real.stdout, real.stdout


def test_layout_bounds_every_file_name_and_keeps_short_names_as_they_were():
    d = Digest.parse("sha512:" + "f" * 128)
    tag = "T" * 128
    for ns in [*LONG_NAMES.values(), AT_BOUND, "nginx/app"]:
        keys = [paths.revision(ns, d), paths.manifest_body(ns, d), paths.tag(ns, tag), paths.grant(ns, d),
                paths.ref_marker(ns, d, d), paths.referrer(ns, d, d), paths.pull_time(ns, d),
                paths.tag_tombstone(ns, tag), paths.digest_tombstone(ns, d), paths.blob_index(d, ns),
                paths.blob_data(d), paths.quarantine(d), paths.upload_info("0" * 36)]
        for key in keys:
            parts = key.split("/")
            assert len(parts[-1]) <= paths.MAX_FILE_NAME, key
            assert max(map(len, parts)) <= 255 and len(key) <= 1024, key
    # Names whose entry fits stay byte for byte what earlier versions wrote.
    assert paths.blob_index(d, "nginx/app") == f"blob-index/sha512/{'f' * 128}/nginx%2Fapp"
    assert paths.blob_index(d, AT_BOUND).endswith("/" + AT_BOUND.replace("/", "%2F"))
    assert paths.legacy_blob_index(d, AT_BOUND) is None
    # Longer ones are hashed, distinct, and say so; their old form is still known.
    hashed = {paths.ns_entry(ns) for ns in LONG_NAMES.values()}
    assert len(hashed) == 3 and all("%23" in e and paths.ns_from_entry(e) is None for e in hashed)
    legacy = paths.legacy_blob_index(d, LONG_NAMES["legacy-range"])
    assert legacy.endswith("/" + LONG_NAMES["legacy-range"].replace("/", "%2F"))


# ---------------------------------------------------------------- forced failures (filesystem)

def _fs(server) -> FsStore:
    return FsStore(str(server.workdir / "data"))


def _obstruct(server, key: str) -> None:
    """Put a regular file where ``key``'s parent directory must go: the write fails with an OSError."""
    path = server.workdir / "data" / key
    path.parent.parent.mkdir(parents=True, exist_ok=True)
    path.parent.write_bytes(b"in the way")


def _clear(server, key: str) -> None:
    (server.workdir / "data" / key).parent.unlink()


def test_failed_index_write_grants_nothing(angos_factory):
    server = angos_factory(extra="[global]\nallow_missing_manifest_references = false\n")
    ns, sibling, data = LONG_NAMES["components"], "short/sibling", os.urandom(500)
    d = Digest.parse("sha256:" + hashlib.sha256(data).hexdigest())
    _obstruct(server, paths.blob_index(d, ns))
    r = _post(server, ns, data)
    assert r.status_code == 500
    # Nothing claims the blob for ns: no HEAD, no manifest, no grant record.
    assert _head(server, ns, str(d)) == 404
    config = _push_blob(server, ns, b"{}")
    body = json.dumps({"schemaVersion": 2, "mediaType": OCI,
                       "config": {"mediaType": CONFIG, "digest": config, "size": 2},
                       "layers": [{"mediaType": LAYER, "digest": str(d), "size": len(data)}]}).encode()
    r = requests.put(server.v2(f"{ns}/manifests/v1"), data=body, headers={"Content-Type": OCI})
    assert r.status_code == 404 and "MANIFEST_BLOB_UNKNOWN" in r.text
    assert not _fs(server).exists(paths.grant(ns, d))
    _clear(server, paths.blob_index(d, ns))
    # Once the store works again the same push succeeds, and a sibling's delete leaves it alone.
    assert _push_blob(server, ns, data) == str(d)
    assert _push_blob(server, sibling, data) == str(d)
    assert requests.delete(server.v2(f"{sibling}/blobs/{d}")).status_code == 202
    assert requests.get(server.v2(f"{ns}/blobs/{d}")).content == data


def test_failed_grant_write_leaves_an_entry_that_only_protects(angos_factory):
    server = angos_factory()
    ns, sibling, data = LONG_NAMES["one-component"], "short/sibling", os.urandom(500)
    d = Digest.parse("sha256:" + hashlib.sha256(data).hexdigest())
    assert _push_blob(server, sibling, data) == str(d)
    _obstruct(server, paths.grant(ns, d))
    assert _post(server, ns, data).status_code == 500
    assert _head(server, ns, str(d)) == 404
    store = _fs(server)
    assert store.exists(paths.blob_index(d, ns)) and not store.exists(paths.grant(ns, d))
    # The sibling's delete sees ns's entry and keeps the bytes (over-protection, never loss).
    assert requests.delete(server.v2(f"{sibling}/blobs/{d}")).status_code == 202
    assert store.exists(paths.blob_data(d))
    _clear(server, paths.grant(ns, d))
    # Scrub drops the entry nobody's grant backs, then reclaims the bytes nobody owns.
    real = scrub(server, "--blobs", env={"ANGOS_SCRUB_BLOB_GRACE": "0s"})
    assert real.returncode == 0, real.stderr
    assert "reclaimed=1" in real.stdout and "index_removed=1" in real.stdout, real.stdout
    assert not store.exists(paths.blob_data(d)) and not store.exists(paths.blob_index(d, ns))


# ---------------------------------------------------------------- what earlier versions left

def test_grant_without_index_entry_from_an_earlier_version_is_reindexed(angos_factory):
    """The aftermath of the bug: a long namespace's grant whose index entry was never written."""
    server = angos_factory()
    ns, sibling, data = LONG_NAMES["components"], "short/sibling", os.urandom(700)
    d = Digest.parse(_push_blob(server, ns, data))
    store = _fs(server)
    store.delete(paths.blob_index(d, ns))
    assert _push_blob(server, sibling, data) == str(d)

    dry = scrub(server, "--blobs", "--dry-run")
    assert lines(dry.stdout, "AddIndexEntry") == [f"AddIndexEntry digest={d} namespace={ns}"]
    real = scrub(server, "--blobs")
    assert real.returncode == 0, real.stderr
    assert store.exists(paths.blob_index(d, ns))
    assert requests.delete(server.v2(f"{sibling}/blobs/{d}")).status_code == 202
    assert requests.get(server.v2(f"{ns}/blobs/{d}")).content == data


def test_legacy_unbounded_entry_keeps_protecting_and_scrub_rewrites_it(angos_factory):
    server = angos_factory()
    ns, sibling, data = LONG_NAMES["legacy-range"], "short/sibling", os.urandom(900)
    d = Digest.parse(_push_blob(server, ns, data))
    store = _fs(server)
    legacy = paths.legacy_blob_index(d, ns)
    # What an earlier version wrote for this 208-byte entry: the readable name, empty body.
    store.delete(paths.blob_index(d, ns))
    store.put(legacy, b"")
    assert _push_blob(server, sibling, data) == str(d)
    assert requests.delete(server.v2(f"{sibling}/blobs/{d}")).status_code == 202
    assert requests.get(server.v2(f"{ns}/blobs/{d}")).content == data

    dry = scrub(server, "--blobs", "--dry-run")
    assert lines(dry.stdout, "RewriteIndexEntry") == [f"RewriteIndexEntry digest={d} namespace={ns}"]
    assert store.exists(legacy)
    real = scrub(server, "--blobs")
    assert real.returncode == 0 and "index_rewritten=1" in real.stdout, real.stdout
    assert store.exists(paths.blob_index(d, ns)) and not store.exists(legacy)
    assert requests.get(server.v2(f"{ns}/blobs/{d}")).content == data

    # A legacy entry is removed by the namespace's own delete too, so the bytes do not leak.
    store.delete(paths.blob_index(d, ns))
    store.put(legacy, b"")
    assert requests.delete(server.v2(f"{ns}/blobs/{d}")).status_code == 202
    assert not store.exists(legacy) and not store.exists(paths.blob_data(d))


# ---------------------------------------------------------------- missing bytes

def test_scrub_reports_a_manifest_whose_blob_bytes_are_gone(angos_factory):
    server = angos_factory()
    ns = LONG_NAMES["components"]
    config, layer, foreign = b'{"os":"linux"}', os.urandom(1200), os.urandom(50)
    d_config, d_layer = _push_blob(server, ns, config), _push_blob(server, ns, layer)
    doc = json.loads(_manifest(config, [layer]))
    # A non-distributable layer is never pushed: its absence is not a problem.
    doc["layers"].append({"mediaType": LAYER, "digest": "sha256:" + hashlib.sha256(foreign).hexdigest(),
                          "size": len(foreign), "urls": ["https://example.invalid/layer"]})
    body = json.dumps(doc).encode()
    r = requests.put(server.v2(f"{ns}/manifests/v1"), data=body, headers={"Content-Type": OCI})
    assert r.status_code == 201, r.text
    clean = scrub(server, "--blobs", "--dry-run")
    assert clean.returncode == 0 and "missing=0" in clean.stdout, clean.stdout + clean.stderr

    # The bytes vanish (as a sibling's delete did before the fix); the grant is still there.
    _fs(server).delete(paths.blob_data(Digest.parse(d_layer)))
    for args in (("--blobs", "--dry-run"), ("--blobs",)):
        res = scrub(server, *args)
        assert res.returncode == 1, res.stdout
        assert "missing=1" in res.stdout and "problems=1" in res.stdout, res.stdout
        assert f"MISSING bytes of {d_layer} named by manifest {r.headers['Docker-Content-Digest']} in {ns}" \
            in res.stderr and "grant held: yes" in res.stderr, res.stderr
    assert _head(server, ns, d_config) == 200
    # Pushing the blob again is the repair.
    assert _push_blob(server, ns, layer) == d_layer
    assert scrub(server, "--blobs").returncode == 0
