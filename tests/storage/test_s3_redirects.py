"""Redirects to presigned S3 URLs, and large chunked uploads over S3 multipart parts.

Blob and manifest GETs on an S3-backed server answer 307 (with
Docker-Content-Digest) to a presigned URL when redirects are enabled, unless
the client sends a truthy ``X-Angos-No-Redirect``; a redirected manifest keeps
its media type; HEAD is always answered directly.
"""

from __future__ import annotations

import hashlib

import pytest
import requests

from tests.api.helpers import OCI_MANIFEST, absolute, digest_of, push_blob, push_image, random_bytes, start_upload, uniq
from tests.replication.test_metrics import metric
from tests.streams import PseudoRandomBlob, SizedStream, hash_response

MiB = 1024 * 1024


@pytest.fixture(scope="module")
def image(s3_angos_redirect):
    ns = uniq("redir")
    digest, body, media_type, blobs = push_image(s3_angos_redirect, ns, "sha256", tag="v1")
    return ns, digest, body, media_type, blobs


def test_blob_get_redirects_to_a_presigned_url_serving_the_exact_bytes(s3_angos_redirect):
    ns = uniq("redir")
    data = random_bytes(4000)
    d = push_blob(s3_angos_redirect, ns, data)
    r = requests.get(s3_angos_redirect.v2(f"{ns}/blobs/{d}"), allow_redirects=False)
    assert r.status_code == 307
    assert r.headers["Docker-Content-Digest"] == d
    location = r.headers["Location"]
    assert not location.startswith(s3_angos_redirect.url)
    fetched = requests.get(location)
    assert fetched.status_code == 200 and fetched.content == data
    ranged = requests.get(location, headers={"Range": "bytes=100-199"})
    assert ranged.status_code == 206 and ranged.content == data[100:200]


@pytest.mark.parametrize("value, redirected", [("1", False), ("true", False), ("yes", False),
                                               ("0", True), ("false", True), ("", True)])
def test_no_redirect_header_forces_an_inline_body_unless_empty_zero_or_false(s3_angos_redirect, value, redirected):
    ns = uniq("redir")
    data = random_bytes(1000)
    d = push_blob(s3_angos_redirect, ns, data)
    r = requests.get(s3_angos_redirect.v2(f"{ns}/blobs/{d}"), headers={"X-Angos-No-Redirect": value},
                     allow_redirects=False)
    if redirected:
        assert r.status_code == 307
    else:
        assert r.status_code == 200
        assert r.content == data
        assert r.headers["Docker-Content-Digest"] == d


def test_manifest_get_redirects_with_the_manifest_media_type(s3_angos_redirect, image):
    ns, digest, body, media_type, _ = image
    for ref in ("v1", digest):
        r = requests.get(s3_angos_redirect.v2(f"{ns}/manifests/{ref}"), allow_redirects=False)
        assert r.status_code == 307
        assert r.headers["Docker-Content-Digest"] == digest
        fetched = requests.get(r.headers["Location"])
        assert fetched.status_code == 200
        assert fetched.content == body  # the bare body, not the stored revision record
        assert fetched.headers["Content-Type"] == media_type == OCI_MANIFEST


def test_head_and_no_redirect_manifest_gets_are_answered_inline(s3_angos_redirect, image):
    ns, digest, body, media_type, blobs = image
    h = requests.head(s3_angos_redirect.v2(f"{ns}/manifests/v1"), allow_redirects=False)
    assert h.status_code == 200 and h.headers["Docker-Content-Digest"] == digest
    hb = requests.head(s3_angos_redirect.v2(f"{ns}/blobs/{blobs[0]}"), allow_redirects=False)
    assert hb.status_code == 200
    r = requests.get(s3_angos_redirect.v2(f"{ns}/manifests/v1"), headers={"X-Angos-No-Redirect": "1"},
                     allow_redirects=False)
    assert r.status_code == 200 and r.content == body and r.headers["Content-Type"] == media_type


def test_deleted_manifest_is_not_redirected_and_its_body_is_gone(s3_angos_redirect):
    ns = uniq("redir")
    digest, _, _, _ = push_image(s3_angos_redirect, ns, "sha256", tag="gone")
    location = requests.get(s3_angos_redirect.v2(f"{ns}/manifests/{digest}"), allow_redirects=False).headers["Location"]
    assert requests.delete(s3_angos_redirect.v2(f"{ns}/manifests/{digest}")).status_code == 202
    assert requests.get(s3_angos_redirect.v2(f"{ns}/manifests/{digest}"), allow_redirects=False).status_code == 404
    assert requests.get(location).status_code in (403, 404)  # S3 answers 403 for a missing key without ListBucket


def test_redirects_off_serves_blobs_and_manifests_inline(s3_angos):
    ns = uniq("inline")
    digest, body, _, blobs = push_image(s3_angos, ns, "sha256", tag="v1")
    assert requests.get(s3_angos.v2(f"{ns}/manifests/v1"), allow_redirects=False).status_code == 200
    assert requests.get(s3_angos.v2(f"{ns}/blobs/{blobs[0]}"), allow_redirects=False).status_code == 200


def test_chunked_upload_across_part_boundaries_over_many_patches(s3_angos):
    """PATCH sizes unrelated to the 5 MiB part size; the two gunicorn workers take turns."""
    ns = uniq("parts")
    data = random_bytes(13 * MiB + 77)
    location = start_upload(s3_angos, ns)
    offset = 0
    for size in (3 * MiB, 1, 4 * MiB - 1, 3 * MiB + 5, len(data)):
        chunk = data[offset:offset + size]
        r = requests.patch(absolute(s3_angos, location), data=chunk, headers={
            "Content-Type": "application/octet-stream", "Content-Range": f"{offset}-{offset + len(chunk) - 1}"})
        assert r.status_code == 202, r.text
        offset += len(chunk)
        assert r.headers["Range"] == f"0-{offset - 1}"
        location = r.headers["Location"]
    assert offset == len(data)
    d = digest_of(data)
    r = requests.put(absolute(s3_angos, location) + ("&" if "?" in location else "?") + f"digest={d}")
    assert r.status_code == 201, r.text
    got = requests.get(s3_angos.v2(f"{ns}/blobs/{d}"))
    assert hashlib.sha256(got.content).hexdigest() == d.split(":")[1]


@pytest.mark.slow
def test_a_100_mib_blob_pushed_in_chunks_is_pulled_back_redirected_and_inline(s3_angos_redirect):
    server = s3_angos_redirect
    ns = uniq("big")
    blob = PseudoRandomBlob(100 * MiB + 12345, seed=7)
    location = start_upload(server, ns)
    # Three PATCHes, one streamed without a length, none aligned to parts.
    bounds = [0, 37 * MiB + 1, 78 * MiB + 3, blob.size]
    chunks = blob.chunks()
    pending = b""
    for i in range(3):
        want = bounds[i + 1] - bounds[i]

        def piece(want=want):
            nonlocal pending
            left = want
            while left:
                block = pending or next(chunks)
                pending = block[left:]
                out = block[:left]
                left -= len(out)
                yield out

        headers = {"Content-Type": "application/octet-stream"}
        if i < 2:
            headers["Content-Range"] = f"{bounds[i]}-{bounds[i + 1] - 1}"
            body = SizedStream(piece(), want)
        else:
            body = piece()  # chunked transfer encoding: no length
        r = requests.patch(absolute(server, location), data=body, headers=headers)
        assert r.status_code == 202, r.text
        location = r.headers["Location"]
    r = requests.put(absolute(server, location) + ("&" if "?" in location else "?") + f"digest={blob.digest}")
    assert r.status_code == 201, r.text
    url = server.v2(f"{ns}/blobs/{blob.digest}")
    first = requests.get(url, allow_redirects=False)
    assert first.status_code == 307
    with requests.get(url, stream=True) as redirected:
        assert hash_response(redirected) == (blob.digest, blob.size)
    with requests.get(url, stream=True, headers={"X-Angos-No-Redirect": "1"}) as inline:
        assert inline.status_code == 200
        assert hash_response(inline) == (blob.digest, blob.size)


def test_a_redirected_get_counts_no_pulled_bytes_and_an_inline_one_counts_its_body(s3_angos_redirect):
    ns = uniq("redir")
    data = random_bytes(5000)
    d = push_blob(s3_angos_redirect, ns, data)
    pulled = lambda: metric(s3_angos_redirect, "angos_pulled_bytes_total", repository="_other")  # noqa: E731
    before = pulled()
    assert requests.get(s3_angos_redirect.v2(f"{ns}/blobs/{d}"), allow_redirects=False).status_code == 307
    assert pulled() == before  # the bytes went from S3, not from us
    inline = requests.get(s3_angos_redirect.v2(f"{ns}/blobs/{d}"), headers={"X-Angos-No-Redirect": "1"})
    assert inline.content == data
    assert pulled() == before + len(data)
