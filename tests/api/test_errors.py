"""Error answers that cut across endpoints, over real HTTP: the API version
check, malformed digests anywhere (always 400 DIGEST_INVALID, never a 500),
invalid repository names (NAME_INVALID), unknown routes and methods, all in
the OCI error JSON shape."""

from __future__ import annotations

import uuid

import pytest
import requests

from .helpers import (OCI_MANIFEST, assert_error_shape, assert_oci_error, digest_of, push_blob, push_image,
                      start_upload, uniq, with_query)

BAD_DIGESTS = [
    "sha256:abc",                      # too short
    "sha256:" + "a" * 65,              # too long
    "sha512:" + "a" * 64,              # sha256 length under sha512
    "sha256:" + "A" * 64,              # upper-case hex
    "sha256:" + "g" * 64,              # not hex
    "sha256:",                         # empty hex
    ":" + "a" * 64,                    # no algorithm
    "md5:d41d8cd98f00b204e9800998ecf8427e",  # unsupported algorithm
    "sha256:" + "a" * 63 + "%00",      # NUL byte
    "sha256:" + "a" * 62 + "%0a",      # newline
]


def test_api_version_check(angos):
    for method in ("GET", "HEAD"):
        r = requests.request(method, angos.v2(""))
        assert r.status_code == 200
        assert r.headers["Docker-Distribution-API-Version"] == "registry/2.0"
    assert requests.get(angos.url + "/v2").status_code == 200


@pytest.fixture(scope="module")
def populated(angos):
    ns = uniq("err")
    d, _, _, _ = push_image(angos, ns, tag="t")
    return ns


@pytest.mark.parametrize("bad", BAD_DIGESTS)
def test_malformed_digest_is_digest_invalid_everywhere(angos, populated, bad):
    ns = populated
    body = b'{"schemaVersion":2}'
    calls = [
        ("GET", f"{ns}/blobs/{bad}", None, {}),
        ("DELETE", f"{ns}/blobs/{bad}", None, {}),
        ("POST", f"{ns}/blobs/uploads/?digest={bad}", b"x", {}),
        ("POST", f"{ns}/blobs/uploads/?mount={bad}&from={ns}", None, {}),
        ("GET", f"{ns}/manifests/{bad}", None, {}),
        ("PUT", f"{ns}/manifests/{bad}", body, {"Content-Type": OCI_MANIFEST}),
        ("DELETE", f"{ns}/manifests/{bad}", None, {}),
        ("GET", f"{ns}/referrers/{bad}", None, {}),
    ]
    for method, path, data, headers in calls:
        r = requests.request(method, angos.v2(path), data=data, headers=headers)
        assert_oci_error(r, 400, "DIGEST_INVALID")
    r = requests.head(angos.v2(f"{ns}/blobs/{bad}"))
    assert r.status_code == 400
    r = requests.head(angos.v2(f"{ns}/manifests/{bad}"))
    assert r.status_code == 400
    loc = start_upload(angos, ns)
    assert_oci_error(requests.put(with_query(loc, f"digest={bad}"), data=b"x"), 400, "DIGEST_INVALID")
    assert requests.get(loc).status_code == 204  # the session survives a bad close


def test_malformed_digest_in_a_manifest_descriptor_is_manifest_invalid(angos, populated):
    body = (b'{"schemaVersion":2,"mediaType":"%s","config":{"mediaType":"application/vnd.oci.image.config.v1+json",'
            b'"digest":"sha256:../../etc","size":2},"layers":[]}' % OCI_MANIFEST.encode())
    r = requests.put(angos.v2(f"{populated}/manifests/bad"), data=body, headers={"Content-Type": OCI_MANIFEST})
    assert_oci_error(r, 400, "MANIFEST_INVALID")


# (Dot segments and encoded slashes need a raw client: see tests/test_hostile.py.)
BAD_NAMES = [
    "UPPER", "a//b", "-dash", "trailing-", "a/-b", "a..b", "a" * 256, "sp%20ace", "_under", "a___b",
]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_invalid_repository_name_is_name_invalid_on_every_endpoint(angos, name):
    d = digest_of(b"x")
    calls = [
        ("GET", f"{name}/tags/list"),
        ("GET", f"{name}/manifests/latest"),
        ("PUT", f"{name}/manifests/latest"),
        ("DELETE", f"{name}/manifests/latest"),
        ("GET", f"{name}/blobs/{d}"),
        ("DELETE", f"{name}/blobs/{d}"),
        ("POST", f"{name}/blobs/uploads/"),
        ("POST", f"{name}/blobs/uploads/?digest={d}"),
        ("GET", f"{name}/blobs/uploads/{uuid.uuid4()}"),
        ("PATCH", f"{name}/blobs/uploads/{uuid.uuid4()}"),
        ("PUT", f"{name}/blobs/uploads/{uuid.uuid4()}?digest={d}"),
        ("DELETE", f"{name}/blobs/uploads/{uuid.uuid4()}"),
        ("GET", f"{name}/referrers/{d}"),
    ]
    for method, path in calls:
        r = requests.request(method, angos.v2(path), data=b"x" if method in ("PUT", "PATCH", "POST") else None)
        assert_oci_error(r, 400, "NAME_INVALID")


def test_mount_from_an_invalid_name_is_name_invalid(angos, populated):
    d = push_blob(angos, populated, b"mount source")
    r = requests.post(angos.v2(f"{uniq('err')}/blobs/uploads/?mount={d}&from=../{populated}"))
    assert_oci_error(r, 400, "NAME_INVALID")


def test_valid_name_grammar_edges_are_accepted(angos):
    base = uniq("err")
    for name in (f"{base}/a.b", f"{base}/a_b", f"{base}/a__b", f"{base}/a---b", f"{base}/x/y/z/0"):
        push_blob(angos, name, b"ok")


def test_unknown_route_and_method_answer_oci_errors(angos, populated):
    r = requests.get(angos.url + "/v2/" + populated + "/nothing-here")
    assert r.status_code == 404
    assert_error_shape(r)
    r = requests.post(angos.v2(f"{populated}/manifests/t"))
    assert r.status_code == 405
    assert_error_shape(r)


def test_invalid_n_is_unsupported(angos, populated):
    for path in (f"{populated}/tags/list?n=x", "_catalog?n=-2"):
        assert_oci_error(requests.get(angos.v2(path)), 400, "UNSUPPORTED")


def test_post_on_an_upload_session_is_405_unsupported(angos, populated):
    loc = start_upload(angos, populated)
    assert_oci_error(requests.post(loc), 405, "UNSUPPORTED")


def test_delete_in_an_unknown_namespace_is_name_unknown(angos):
    ns = uniq("err")
    assert_oci_error(requests.delete(angos.v2(f"{ns}/manifests/t")), 404, "NAME_UNKNOWN")
    assert_oci_error(requests.delete(angos.v2(f"{ns}/manifests/{digest_of(b'x')}")), 404, "NAME_UNKNOWN")


def test_manifests_are_per_namespace(angos):
    ns = uniq("err")
    d, _, _, _ = push_image(angos, ns, tag="t")
    other = uniq("err")
    push_image(angos, other, tag="t2")
    assert_oci_error(requests.get(angos.v2(f"{other}/manifests/{d}")), 404, "MANIFEST_UNKNOWN")
