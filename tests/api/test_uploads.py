"""Blob uploads over real HTTP: monolithic POST, POST+PUT, chunked and streamed
PATCH, final chunk on PUT, status, cancel, out-of-order chunks, the
``digest-algorithm`` parameter and the upload error codes — for sha256 and sha512."""

from __future__ import annotations

import uuid

import pytest
import requests

from .conftest import STRICT_MAX_BLOB
from .helpers import (ALGS, absolute, assert_oci_error, digest_of, random_bytes, start_upload, uniq,
                      with_query)


def _assert_blob(server, ns: str, d: str, data: bytes) -> None:
    r = requests.get(server.v2(f"{ns}/blobs/{d}"))
    assert r.status_code == 200
    assert r.content == data
    assert r.headers["Docker-Content-Digest"] == d


def _assert_session_headers(server, r: requests.Response, end: int) -> str:
    assert r.headers["Location"]
    assert r.headers["Range"] == f"0-{end}"
    return absolute(server, r.headers["Location"])


@pytest.mark.parametrize("alg", ALGS)
def test_monolithic_post_with_digest_creates_the_blob(angos, alg):
    ns = uniq("up")
    data = random_bytes(1000)
    d = digest_of(data, alg)
    r = requests.post(angos.v2(f"{ns}/blobs/uploads/?digest={d}"), data=data)
    assert r.status_code == 201, r.text
    assert r.headers["Docker-Content-Digest"] == d
    assert requests.get(absolute(angos, r.headers["Location"])).content == data
    _assert_blob(angos, ns, d, data)


@pytest.mark.parametrize("alg", ALGS)
def test_post_then_put_with_the_whole_body_completes_the_upload(angos, alg):
    ns = uniq("up")
    data = random_bytes(500)
    d = digest_of(data, alg)
    r = requests.post(angos.v2(f"{ns}/blobs/uploads/"))
    assert r.status_code == 202
    assert r.headers["Location"]
    assert r.headers["Docker-Upload-UUID"]
    r = requests.put(with_query(absolute(angos, r.headers["Location"]), f"digest={d}"), data=data,
                     headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 201, r.text
    assert r.headers["Docker-Content-Digest"] == d
    assert r.headers["Location"].endswith(f"/v2/{ns}/blobs/{d}")
    _assert_blob(angos, ns, d, data)


@pytest.mark.parametrize("alg", ALGS)
def test_chunked_patches_report_range_and_location_then_close_with_put(angos, alg):
    ns = uniq("up")
    data = random_bytes(3000)
    d = digest_of(data, alg)
    loc = start_upload(angos, ns)
    for start, end in ((0, 999), (1000, 1999), (2000, 2999)):
        r = requests.patch(loc, data=data[start:end + 1],
                           headers={"Content-Range": f"{start}-{end}", "Content-Type": "application/octet-stream"})
        assert r.status_code == 202, r.text
        loc = _assert_session_headers(angos, r, end)
        status = requests.get(loc)
        assert status.status_code == 204
        _assert_session_headers(angos, status, end)
    r = requests.put(with_query(loc, f"digest={d}"))
    assert r.status_code == 201, r.text
    _assert_blob(angos, ns, d, data)


@pytest.mark.parametrize("alg", ALGS)
def test_streamed_patch_without_content_length_is_accepted(angos, alg):
    ns = uniq("up")
    parts = [random_bytes(700), random_bytes(1), random_bytes(4096)]
    data = b"".join(parts)
    d = digest_of(data, alg)
    loc = start_upload(angos, ns)
    r = requests.patch(loc, data=iter(parts))  # a generator: chunked transfer encoding, no Content-Length
    assert r.request.headers.get("Transfer-Encoding") == "chunked"
    assert "Content-Length" not in r.request.headers
    assert r.status_code == 202, r.text
    loc = _assert_session_headers(angos, r, len(data) - 1)
    r = requests.put(with_query(loc, f"digest={d}"))
    assert r.status_code == 201, r.text
    _assert_blob(angos, ns, d, data)


@pytest.mark.parametrize("alg", ALGS)
def test_final_chunk_may_ride_on_the_closing_put(angos, alg):
    ns = uniq("up")
    data = random_bytes(2048)
    d = digest_of(data, alg)
    loc = start_upload(angos, ns)
    r = requests.patch(loc, data=data[:1024], headers={"Content-Range": "0-1023"})
    assert r.status_code == 202
    loc = absolute(angos, r.headers["Location"])
    r = requests.put(with_query(loc, f"digest={d}"), data=data[1024:], headers={"Content-Range": "1024-2047"})
    assert r.status_code == 201, r.text
    _assert_blob(angos, ns, d, data)


@pytest.mark.parametrize("alg", ALGS)
def test_digest_algorithm_parameter_on_post_starts_a_session_for_that_algorithm(angos, alg):
    ns = uniq("up")
    data = random_bytes(300)
    d = digest_of(data, alg)
    loc = start_upload(angos, ns, f"digest-algorithm={alg}")
    r = requests.patch(loc, data=data)
    assert r.status_code == 202
    r = requests.put(with_query(absolute(angos, r.headers["Location"]), f"digest={d}"))
    assert r.status_code == 201, r.text
    assert r.headers["Docker-Content-Digest"] == d
    _assert_blob(angos, ns, d, data)


def test_unsupported_digest_algorithm_on_post_is_digest_invalid(angos):
    r = requests.post(angos.v2(f"{uniq('up')}/blobs/uploads/?digest-algorithm=md5"))
    assert_oci_error(r, 400, "DIGEST_INVALID")


def test_cancel_answers_204_and_the_session_is_then_unknown(angos):
    ns = uniq("up")
    loc = start_upload(angos, ns)
    assert requests.patch(loc, data=b"abc").status_code == 202
    r = requests.delete(loc)
    assert r.status_code == 204
    assert_oci_error(requests.get(loc), 404, "BLOB_UPLOAD_UNKNOWN")
    assert_oci_error(requests.patch(loc, data=b"more"), 404, "BLOB_UPLOAD_UNKNOWN")
    assert_oci_error(requests.put(with_query(loc, f"digest={digest_of(b'abc')}")), 404, "BLOB_UPLOAD_UNKNOWN")
    assert_oci_error(requests.delete(loc), 404, "BLOB_UPLOAD_UNKNOWN")


@pytest.mark.parametrize("method", ["GET", "PATCH", "PUT", "DELETE"])
def test_unknown_upload_session_is_blob_upload_unknown(angos, method):
    url = angos.v2(f"{uniq('up')}/blobs/uploads/{uuid.uuid4()}")
    if method == "PUT":
        url = with_query(url, f"digest={digest_of(b'x')}")
    assert_oci_error(requests.request(method, url, data=b"x" if method == "PATCH" else None), 404,
                     "BLOB_UPLOAD_UNKNOWN")


def test_a_session_is_unknown_under_another_namespace(angos):
    loc = start_upload(angos, uniq("up"))
    other = loc.replace("/v2/up-", "/v2/other-")
    assert other != loc
    assert_oci_error(requests.get(other), 404, "BLOB_UPLOAD_UNKNOWN")
    assert_oci_error(requests.patch(other, data=b"x"), 404, "BLOB_UPLOAD_UNKNOWN")
    assert requests.get(loc).status_code == 204


@pytest.mark.parametrize("alg", ALGS)
def test_out_of_order_chunk_is_416_and_the_session_survives(angos, alg):
    ns = uniq("up")
    data = random_bytes(30)
    loc = start_upload(angos, ns)
    r = requests.patch(loc, data=data[10:20], headers={"Content-Range": "10-19"})
    assert r.status_code == 416
    r = requests.patch(loc, data=data[:10], headers={"Content-Range": "0-9"})
    assert r.status_code == 202
    loc = absolute(angos, r.headers["Location"])
    for bad in ("20-29", "5-14", "0-9"):  # a gap, an overlap, a replay
        r = requests.patch(loc, data=data[:10], headers={"Content-Range": bad})
        assert_oci_error(r, 416, "BLOB_UPLOAD_INVALID")
    status = requests.get(loc)
    assert status.status_code == 204 and status.headers["Range"] == "0-9"
    r = requests.put(with_query(loc, f"digest={digest_of(data, alg)}"), data=data[20:],
                     headers={"Content-Range": "20-29"})
    assert r.status_code == 416  # the final chunk out of order too
    r = requests.patch(loc, data=data[10:], headers={"Content-Range": "10-29"})
    assert r.status_code == 202
    r = requests.put(with_query(absolute(angos, r.headers["Location"]), f"digest={digest_of(data, alg)}"))
    assert r.status_code == 201
    _assert_blob(angos, ns, digest_of(data, alg), data)


@pytest.mark.parametrize("alg", ALGS)
def test_digest_mismatch_on_close_is_digest_invalid_and_stores_nothing(angos, alg):
    ns = uniq("up")
    data = random_bytes(100)
    wrong = digest_of(b"something else", alg)
    loc = start_upload(angos, ns)
    r = requests.put(with_query(loc, f"digest={wrong}"), data=data)
    assert_oci_error(r, 400, "DIGEST_INVALID")
    assert requests.head(angos.v2(f"{ns}/blobs/{wrong}")).status_code == 404
    assert requests.head(angos.v2(f"{ns}/blobs/{digest_of(data, alg)}")).status_code == 404


@pytest.mark.parametrize("alg", ALGS)
def test_monolithic_digest_mismatch_is_digest_invalid_and_stores_nothing(angos, alg):
    ns = uniq("up")
    data = random_bytes(100)
    wrong = digest_of(b"not the body", alg)
    r = requests.post(angos.v2(f"{ns}/blobs/uploads/?digest={wrong}"), data=data)
    assert_oci_error(r, 400, "DIGEST_INVALID")
    assert requests.head(angos.v2(f"{ns}/blobs/{wrong}")).status_code == 404
    assert requests.head(angos.v2(f"{ns}/blobs/{digest_of(data, alg)}")).status_code == 404


def test_closing_put_without_digest_is_digest_invalid(angos):
    loc = start_upload(angos, uniq("up"))
    assert_oci_error(requests.put(loc, data=b"abc"), 400, "DIGEST_INVALID")


def test_content_length_that_disagrees_with_content_range_is_rejected(angos):
    loc = start_upload(angos, uniq("up"))
    r = requests.patch(loc, data=b"0123456789", headers={"Content-Range": "0-19"})
    assert_oci_error(r, 400, "SIZE_INVALID")
    # Nothing was kept: the session still accepts its first chunk at offset 0.
    r = requests.patch(loc, data=b"0123456789", headers={"Content-Range": "0-9"})
    assert r.status_code == 202 and r.headers["Range"] == "0-9"


def test_blob_over_max_blob_size_is_413_monolithic_and_chunked(strict_angos):
    ns = uniq("up")
    data = random_bytes(STRICT_MAX_BLOB + 1)
    d = digest_of(data)
    assert_oci_error(requests.post(strict_angos.v2(f"{ns}/blobs/uploads/?digest={d}"), data=data), 413,
                     "SIZE_INVALID")
    loc = start_upload(strict_angos, ns)
    r = requests.patch(loc, data=iter([data[:40000], data[40000:]]))  # streamed: the limit trips mid-body
    assert_oci_error(r, 413, "SIZE_INVALID")
    assert requests.head(strict_angos.v2(f"{ns}/blobs/{d}")).status_code == 404
    # Exactly at the limit is fine.
    ok = data[:STRICT_MAX_BLOB]
    r = requests.post(strict_angos.v2(f"{ns}/blobs/uploads/?digest={digest_of(ok)}"), data=ok)
    assert r.status_code == 201, r.text


@pytest.mark.parametrize("alg", ALGS)
def test_refused_close_drops_its_final_chunk_so_the_same_put_can_be_retried(angos, alg):
    ns = uniq("up")
    data = random_bytes(64)
    loc = start_upload(angos, ns)
    r = requests.patch(loc, data=data[:32], headers={"Content-Range": "0-31"})
    loc = absolute(angos, r.headers["Location"])
    r = requests.put(with_query(loc, f"digest={digest_of(b'wrong', alg)}"), data=data[32:],
                     headers={"Content-Range": "32-63"})
    assert_oci_error(r, 400, "DIGEST_INVALID")
    assert requests.get(loc).headers["Range"] == "0-31"
    r = requests.put(with_query(loc, f"digest={digest_of(data, alg)}"), data=data[32:],
                     headers={"Content-Range": "32-63"})
    assert r.status_code == 201, r.text
    _assert_blob(angos, ns, digest_of(data, alg), data)


@pytest.mark.parametrize("alg", ALGS)
def test_streamed_final_chunk_on_the_closing_put(angos, alg):
    ns = uniq("up")
    data = random_bytes(5000)
    d = digest_of(data, alg)
    loc = start_upload(angos, ns)
    r = requests.patch(loc, data=data[:100])
    loc = absolute(angos, r.headers["Location"])
    r = requests.put(with_query(loc, f"digest={d}"), data=iter([data[100:2000], data[2000:]]))
    assert r.request.headers.get("Transfer-Encoding") == "chunked"
    assert r.status_code == 201, r.text
    _assert_blob(angos, ns, d, data)
