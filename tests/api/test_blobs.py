"""Blob HEAD/GET (single ranges, 416), DELETE, per-namespace visibility and
cross-repository mounts over real HTTP, for sha256 and sha512."""

from __future__ import annotations

import pytest
import requests

from .conftest import ALICE, BOB
from .helpers import (ALGS, OCI_MANIFEST, absolute, assert_error_shape, assert_oci_error, descriptor, digest_of,
                      image_manifest, push_blob, put_manifest, random_bytes, uniq, with_query)

SIZE = 1000


@pytest.fixture(params=ALGS)
def blob(request, angos):
    """A blob of SIZE bytes pushed to a fresh namespace: (ns, digest, data)."""
    ns = uniq("blob")
    data = random_bytes(SIZE)
    return ns, push_blob(angos, ns, data, request.param), data


def test_head_reports_size_and_digest_without_a_body(angos, blob):
    ns, d, _ = blob
    r = requests.head(angos.v2(f"{ns}/blobs/{d}"))
    assert r.status_code == 200
    assert r.headers["Content-Length"] == str(SIZE)
    assert r.headers["Docker-Content-Digest"] == d
    assert r.content == b""


def test_get_returns_the_exact_bytes(angos, blob):
    ns, d, data = blob
    r = requests.get(angos.v2(f"{ns}/blobs/{d}"))
    assert r.status_code == 200
    assert r.content == data
    assert r.headers["Content-Length"] == str(SIZE)
    assert r.headers["Docker-Content-Digest"] == d


@pytest.mark.parametrize("header, start, end", [
    ("bytes=10-19", 10, 19),
    ("bytes=0-0", 0, 0),
    ("bytes=990-", 990, SIZE - 1),
    ("bytes=-25", SIZE - 25, SIZE - 1),
    ("bytes=900-5000", 900, SIZE - 1),  # an end past the blob is clamped (RFC 9110)
    ("bytes=-5000", 0, SIZE - 1),       # a suffix longer than the blob is the whole blob
])
def test_single_range_get_answers_206_with_content_range(angos, blob, header, start, end):
    ns, d, data = blob
    r = requests.get(angos.v2(f"{ns}/blobs/{d}"), headers={"Range": header})
    assert r.status_code == 206, r.text
    assert r.headers["Content-Range"] == f"bytes {start}-{end}/{SIZE}"
    assert r.content == data[start:end + 1]
    assert r.headers["Content-Length"] == str(end - start + 1)
    assert r.headers["Docker-Content-Digest"] == d


@pytest.mark.parametrize("header", ["bytes=1000-", f"bytes={SIZE + 50}-{SIZE + 60}", "bytes=-0", "bytes=20-10"])
def test_unsatisfiable_range_is_416_with_the_blob_size(angos, blob, header):
    ns, d, _ = blob
    r = requests.get(angos.v2(f"{ns}/blobs/{d}"), headers={"Range": header})
    assert r.status_code == 416
    assert r.headers["Content-Range"] == f"bytes */{SIZE}"
    assert_error_shape(r)


@pytest.mark.parametrize("alg", ALGS)
def test_unknown_blob_is_404_blob_unknown(angos, alg):
    ns = uniq("blob")
    push_blob(angos, ns, b"something so the namespace exists", alg)
    d = digest_of(b"never pushed", alg)
    assert requests.head(angos.v2(f"{ns}/blobs/{d}")).status_code == 404
    assert_oci_error(requests.get(angos.v2(f"{ns}/blobs/{d}")), 404, "BLOB_UNKNOWN")
    assert_oci_error(requests.delete(angos.v2(f"{ns}/blobs/{d}")), 404, "BLOB_UNKNOWN")


def test_blob_is_unknown_in_another_namespace_until_mounted(angos, blob):
    ns, d, data = blob
    other = uniq("blob")
    assert requests.head(angos.v2(f"{other}/blobs/{d}")).status_code == 404
    assert_oci_error(requests.get(angos.v2(f"{other}/blobs/{d}")), 404, "BLOB_UNKNOWN")
    r = requests.post(angos.v2(f"{other}/blobs/uploads/?mount={d}&from={ns}"))
    assert r.status_code == 201, r.text
    assert r.headers["Docker-Content-Digest"] == d
    assert r.headers["Location"].endswith(f"/v2/{other}/blobs/{d}")
    assert requests.get(absolute(angos, r.headers["Location"])).content == data


def test_mount_without_from_grants_a_blob_readable_elsewhere(angos, blob):
    ns, d, data = blob
    other = uniq("blob")
    r = requests.post(angos.v2(f"{other}/blobs/uploads/?mount={d}"))
    assert r.status_code == 201, r.text
    assert r.headers["Docker-Content-Digest"] == d
    assert requests.get(angos.v2(f"{other}/blobs/{d}")).content == data


@pytest.mark.parametrize("alg", ALGS)
def test_mount_of_a_missing_blob_falls_back_to_an_upload_session(angos, alg):
    ns = uniq("blob")
    data = random_bytes(100)
    d = digest_of(data, alg)
    for query in (f"mount={d}&from={uniq('nowhere')}", f"mount={d}"):
        r = requests.post(angos.v2(f"{ns}/blobs/uploads/?{query}"))
        assert r.status_code == 202, r.text
        loc = absolute(angos, r.headers["Location"])
        assert requests.get(loc).status_code == 204  # a real session
    r = requests.put(with_query(loc, f"digest={d}"), data=data)
    assert r.status_code == 201
    assert requests.get(angos.v2(f"{ns}/blobs/{d}")).content == data


def test_mount_from_a_namespace_that_does_not_hold_the_blob_is_a_session(angos, blob):
    _, d, _ = blob
    third = uniq("blob")
    push_blob(angos, third, b"unrelated")
    r = requests.post(angos.v2(f"{uniq('blob')}/blobs/uploads/?mount={d}&from={third}"))
    assert r.status_code == 202
    assert r.headers["Location"]


def test_delete_answers_202_then_the_blob_is_unknown(angos, blob):
    ns, d, data = blob
    other = uniq("blob")
    assert requests.post(angos.v2(f"{other}/blobs/uploads/?mount={d}&from={ns}")).status_code == 201
    r = requests.delete(angos.v2(f"{ns}/blobs/{d}"))
    assert r.status_code == 202
    assert requests.head(angos.v2(f"{ns}/blobs/{d}")).status_code == 404
    assert_oci_error(requests.get(angos.v2(f"{ns}/blobs/{d}")), 404, "BLOB_UNKNOWN")
    assert_oci_error(requests.delete(angos.v2(f"{ns}/blobs/{d}")), 404, "BLOB_UNKNOWN")
    # The other namespace's grant is untouched.
    assert requests.get(angos.v2(f"{other}/blobs/{d}")).content == data


@pytest.mark.parametrize("alg", ALGS)
def test_delete_of_a_blob_referenced_by_a_manifest_is_405_until_the_manifest_goes(angos, alg):
    ns = uniq("blob")
    config, layer = b'{"os":"linux"}' + random_bytes(8), random_bytes(200)
    cd, ld = push_blob(angos, ns, config, alg), push_blob(angos, ns, layer, alg)
    body = image_manifest(descriptor("application/vnd.oci.image.config.v1+json", config, alg),
                          [descriptor("application/vnd.oci.image.layer.v1.tar", layer, alg)])
    md = digest_of(body, alg)
    assert put_manifest(angos, ns, md, body, OCI_MANIFEST).status_code == 201
    for d in (cd, ld):
        assert_oci_error(requests.delete(angos.v2(f"{ns}/blobs/{d}")), 405, "DENIED")
        assert requests.head(angos.v2(f"{ns}/blobs/{d}")).status_code == 200
    assert requests.delete(angos.v2(f"{ns}/manifests/{md}")).status_code == 202
    for d in (cd, ld):
        assert requests.delete(angos.v2(f"{ns}/blobs/{d}")).status_code == 202
        assert requests.head(angos.v2(f"{ns}/blobs/{d}")).status_code == 404


@pytest.mark.parametrize("alg", ALGS)
def test_empty_blob_round_trips_and_any_range_on_it_is_416(angos, alg):
    ns = uniq("blob")
    d = push_blob(angos, ns, b"", alg)
    r = requests.get(angos.v2(f"{ns}/blobs/{d}"))
    assert r.status_code == 200 and r.content == b"" and r.headers["Content-Length"] == "0"
    assert requests.head(angos.v2(f"{ns}/blobs/{d}")).headers["Content-Length"] == "0"
    r = requests.get(angos.v2(f"{ns}/blobs/{d}"), headers={"Range": "bytes=0-"})
    assert r.status_code == 416
    assert r.headers["Content-Range"] == "bytes */0"


@pytest.mark.parametrize("header", ["bytes=0-1,5-6", "items=0-5", "bytes=abc"])
def test_multi_or_malformed_range_is_ignored_and_the_whole_blob_served(angos, blob, header):
    ns, d, data = blob
    r = requests.get(angos.v2(f"{ns}/blobs/{d}"), headers={"Range": header})
    assert r.status_code == 200
    assert r.content == data


def test_mount_grants_only_what_the_caller_may_read_in_the_source(guarded):
    secret, mine = uniq("secret"), uniq("bob")
    data = random_bytes(64)
    d = digest_of(data)
    r = requests.post(guarded.v2(f"{secret}/blobs/uploads/?digest={d}"), data=data, auth=ALICE)
    assert r.status_code == 201
    assert_oci_error(requests.get(guarded.v2(f"{secret}/blobs/{d}"), auth=BOB), 403, "DENIED")
    for query in (f"mount={d}&from={secret}", f"mount={d}"):
        r = requests.post(guarded.v2(f"{mine}/blobs/uploads/?{query}"), auth=BOB)
        assert r.status_code == 202, r.text  # falls back to an upload session, never an error
    assert_oci_error(requests.get(guarded.v2(f"{mine}/blobs/{d}"), auth=BOB), 404, "BLOB_UNKNOWN")
    r = requests.post(guarded.v2(f"{uniq('alice')}/blobs/uploads/?mount={d}&from={secret}"), auth=ALICE)
    assert r.status_code == 201


def test_a_reference_in_another_namespace_does_not_block_a_blob_delete(angos, blob):
    ns, d, data = blob
    other = uniq("blob")
    assert requests.post(angos.v2(f"{other}/blobs/uploads/?mount={d}&from={ns}")).status_code == 201
    config = b'{"os":"linux"}' + random_bytes(4)
    alg = d.split(":")[0]
    push_blob(angos, other, config, alg)
    body = image_manifest(descriptor("application/vnd.oci.image.config.v1+json", config, alg),
                          [descriptor("application/vnd.oci.image.layer.v1.tar", data, alg)])
    assert put_manifest(angos, other, "t", body, OCI_MANIFEST).status_code == 201
    assert_oci_error(requests.delete(angos.v2(f"{other}/blobs/{d}")), 405, "DENIED")
    assert requests.delete(angos.v2(f"{ns}/blobs/{d}")).status_code == 202
    assert requests.get(angos.v2(f"{other}/blobs/{d}")).content == data  # bytes kept for the other grant
