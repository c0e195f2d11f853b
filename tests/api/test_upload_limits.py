"""Issue 12 #11: upload sessions are bounded per namespace and expire when idle.

Real servers over real HTTP, on the filesystem and on S3 (moto), with small
limits so every test stays bounded in count and time: a cap of a few sessions
and an idle timeout of 2 s. Storage is inspected through the ObjectStore
classes the server itself uses.
"""

from __future__ import annotations

import hashlib
import time

import pytest
import requests

from angos.registry import paths
from angos.storage.fs import FsStore
from tests.conftest import make_bucket

from .helpers import absolute, assert_oci_error, digest_of, push_image, random_bytes, uniq

CAP = 4
# Long enough that opening and writing a few sessions on a loaded machine (the suite runs beside
# other work) takes less: the tests count on sessions being live until they are left idle.
IDLE = 8.0


def _limits(cap: int, idle: str) -> str:
    return f'[global]\nmax_upload_sessions_per_namespace = {cap}\nupload_session_idle_timeout = "{idle}"\n'


@pytest.fixture(params=["fs", "s3"])
def make(request, angos_factory):
    """``make(extra) -> (server, blob store)`` on the parametrized backend."""
    def build(extra: str):
        if request.param == "fs":
            server = angos_factory(extra=extra)
            return server, FsStore(str(server.workdir / "data"))
        from tests.storage.conftest import s3_server_config, s3_store

        endpoint = request.getfixturevalue("moto_server")
        bucket = make_bucket(endpoint)
        text = s3_server_config(0, endpoint, bucket, redirect=False).replace("port = 0", "port = @PORT@")
        text = text.replace("[global]\n", extra, 1)  # extra starts with [global]: one table
        server = angos_factory(config_text=text)
        return server, s3_store(endpoint, bucket, "blobs")
    return build


def _start(server, ns: str) -> requests.Response:
    return requests.post(server.v2(f"{ns}/blobs/uploads/"))


def _open(server, ns: str) -> str:
    r = _start(server, ns)
    assert r.status_code == 202, r.text
    return absolute(server, r.headers["Location"])


def _id(location: str) -> str:
    return location.rstrip("/").rsplit("/", 1)[-1].split("?")[0]


def _store_keys(blobs) -> dict[str, bytes]:
    # The fs data root also holds the job queue's SQLite files, which the drain's housekeeping
    # writes every second whatever the requests do: stored content is everything else.
    return {k: blobs.get(k) for k in blobs.list("") if not k.startswith(("uploads/", "_jobs/", "_locks/"))}


def test_sessions_beyond_the_cap_are_429_until_one_is_finished(make):
    server, blobs = make(_limits(CAP, "1h"))
    ns = uniq("cap")
    digest, body, media_type, _ = push_image(server, ns, tag="v1")
    sessions = [_open(server, ns) for _ in range(CAP)]

    before = _store_keys(blobs)
    refused = _start(server, ns)
    assert_oci_error(refused, 429, "TOOMANYREQUESTS")
    assert 1 <= int(refused.headers["Retry-After"]) <= 3600
    # A mount that cannot mount falls back to a session: refused the same way.
    assert_oci_error(requests.post(server.v2(f"{ns}/blobs/uploads/?mount={digest_of(b'nowhere')}")), 429,
                     "TOOMANYREQUESTS")
    # Refusals change nothing stored, and the image pushed before is byte-identical.
    assert _store_keys(blobs) == before
    assert requests.get(server.v2(f"{ns}/manifests/v1"), headers={"Accept": media_type}).content == body

    # The cap is per namespace, and a monolithic upload (one request, no session left) is not capped.
    assert _start(server, uniq("other")).status_code == 202
    data = random_bytes(300)
    assert requests.post(server.v2(f"{ns}/blobs/uploads/?digest={digest_of(data)}"), data=data).status_code == 201

    # Completing or cancelling a session frees its slot at once.
    assert requests.delete(sessions[0]).status_code == 204
    sessions[0] = _open(server, ns)
    assert_oci_error(_start(server, ns), 429, "TOOMANYREQUESTS")
    d = digest_of(b"finished")
    assert requests.put(f"{sessions[1]}?digest={d}", data=b"finished").status_code == 201
    assert _start(server, ns).status_code == 202
    assert_oci_error(_start(server, ns), 429, "TOOMANYREQUESTS")
    assert requests.get(server.v2(f"{ns}/blobs/{d}")).content == b"finished"


def test_idle_sessions_expire_free_their_slot_and_lose_their_bytes(make):
    """Idle means nothing was written for the timeout; a status GET is not activity."""
    server, blobs = make(_limits(3, f"{IDLE:g}s"))
    ns = uniq("idle")
    kept, gone, lazy = (_open(server, ns) for _ in range(3))
    for loc in (gone, lazy):
        assert requests.patch(loc, data=b"x" * 500).status_code == 202
    refused = _start(server, ns)
    assert_oci_error(refused, 429, "TOOMANYREQUESTS")
    assert int(refused.headers["Retry-After"]) <= IDLE + 1

    # Keep one session written to while the others idle past the timeout.
    sent = bytearray()
    deadline = time.monotonic() + IDLE + 0.7
    while time.monotonic() < deadline:
        chunk = random_bytes(100)
        r = requests.patch(kept, data=chunk, headers={"Content-Range": f"{len(sent)}-{len(sent) + 99}"})
        assert r.status_code == 202, r.text
        sent += chunk
        time.sleep(0.3)  # the behaviour under test: this session is written to while the others idle

    # A start at the cap sweeps: the two idle sessions go (with their bytes), the busy one stays.
    fresh = _open(server, ns)
    assert _start(server, ns).status_code == 202
    assert_oci_error(_start(server, ns), 429, "TOOMANYREQUESTS")
    for loc in (gone, lazy):
        upload_id = _id(loc)
        assert not blobs.exists(paths.upload_data(upload_id)) and not blobs.exists(paths.upload_info(upload_id))
        assert not blobs.exists(paths.upload_marker(ns, upload_id))
        assert_oci_error(requests.get(loc), 404, "BLOB_UPLOAD_UNKNOWN")
        assert_oci_error(requests.patch(loc, data=b"more"), 404, "BLOB_UPLOAD_UNKNOWN")
        assert_oci_error(requests.put(f"{loc}?digest={digest_of(b'x' * 500)}"), 404, "BLOB_UPLOAD_UNKNOWN")
    d = "sha256:" + hashlib.sha256(bytes(sent)).hexdigest()
    assert requests.put(f"{kept}?digest={d}").status_code == 201
    assert requests.get(server.v2(f"{ns}/blobs/{d}")).content == bytes(sent)

    # Without any cap pressure, the next access to an idle session expires it (and removes it).
    upload_id = _id(fresh)
    time.sleep(IDLE + 0.5)  # the idle timeout under test runs out
    assert blobs.exists(paths.upload_data(upload_id))
    assert_oci_error(requests.get(fresh), 404, "BLOB_UPLOAD_UNKNOWN")
    assert not blobs.exists(paths.upload_data(upload_id))
    assert not blobs.exists(paths.upload_marker(ns, upload_id))


def test_default_cap_stops_a_flood_of_unfinished_sessions(angos_factory):
    """The issue's flood (thousands of POSTs never finished), bounded: the default cap is 1000."""
    server = angos_factory()
    ns = uniq("flood")
    with requests.Session() as http:
        codes = [http.post(server.v2(f"{ns}/blobs/uploads/")).status_code for _ in range(1000)]
        assert codes == [202] * 1000
        assert_oci_error(http.post(server.v2(f"{ns}/blobs/uploads/")), 429, "TOOMANYREQUESTS")
        listing = http.get(server.url + f"/_ext/{ns}/_uploads")
        assert listing.status_code == 200 and len(listing.json()["uploads"]) == 1000
