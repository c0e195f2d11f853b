"""Manifests over real HTTP: OCI and Docker media types by tag and by digest,
``?tag=`` with ``OCI-Tag``, deletes, reference checks, non-distributable
layers, the size limit, media type validation and immutable tags — for sha256
and sha512 where the algorithm matters."""

from __future__ import annotations

import json

import pytest
import requests

from .conftest import STRICT_MAX_MANIFEST
from .helpers import (ALGS, DOCKER_LIST, DOCKER_MANIFEST, OCI_CONFIG, OCI_INDEX, OCI_LAYER, OCI_MANIFEST,
                      OCI_NONDIST_LAYER, assert_oci_error, descriptor, digest_of, image_manifest, index_manifest,
                      push_blob, push_image, put_manifest, random_bytes, uniq)


def _assert_served(server, ns: str, reference: str, body: bytes, media_type: str, digest: str) -> None:
    r = requests.get(server.v2(f"{ns}/manifests/{reference}"), headers={"Accept": media_type})
    assert r.status_code == 200, r.text
    assert r.content == body
    assert r.headers["Content-Type"] == media_type
    assert r.headers["Docker-Content-Digest"] == digest
    h = requests.head(server.v2(f"{ns}/manifests/{reference}"), headers={"Accept": media_type})
    assert h.status_code == 200
    assert h.content == b""
    assert h.headers["Content-Length"] == str(len(body))
    assert h.headers["Content-Type"] == media_type
    assert h.headers["Docker-Content-Digest"] == digest


def _image(server, ns: str, alg: str, docker: bool = False) -> tuple[bytes, str]:
    """Push an image manifest by digest; returns (body, media type)."""
    _, body, media_type, _ = push_image(server, ns, alg, docker=docker)
    return body, media_type


@pytest.mark.parametrize("alg", ALGS)
@pytest.mark.parametrize("kind", ["oci-image", "docker-image", "oci-index", "docker-list"])
def test_manifest_round_trips_by_tag_and_digest_with_its_media_type(angos, alg, kind):
    ns = uniq("man")
    if kind in ("oci-image", "docker-image"):
        body, media_type = _image(angos, ns, alg, docker=kind == "docker-image")
    else:
        docker = kind == "docker-list"
        children = []
        for arch in ("amd64", "arm64"):
            child, child_type = _image(angos, ns, alg, docker=docker)
            children.append(descriptor(child_type, child, alg, platform={"architecture": arch, "os": "linux"}))
        media_type = DOCKER_LIST if docker else OCI_INDEX
        body = index_manifest(children, media_type)
    tag = "v1.0"
    r = put_manifest(angos, ns, tag, body, media_type)
    assert r.status_code == 201, r.text
    tag_digest = digest_of(body, "sha256")  # a by-tag push is addressed by the canonical sha256
    assert r.headers["Docker-Content-Digest"] == tag_digest
    assert r.headers["Location"].endswith(f"/v2/{ns}/manifests/{tag_digest}")
    _assert_served(angos, ns, tag, body, media_type, tag_digest)
    _assert_served(angos, ns, tag_digest, body, media_type, tag_digest)
    # The same bytes by their `alg` digest.
    d = digest_of(body, alg)
    r = put_manifest(angos, ns, d, body, media_type)
    assert r.status_code == 201, r.text
    assert r.headers["Docker-Content-Digest"] == d
    _assert_served(angos, ns, d, body, media_type, d)


@pytest.mark.parametrize("alg", ALGS)
def test_by_digest_put_with_tag_parameters_sets_every_tag_and_echoes_oci_tag(angos, alg):
    ns = uniq("man")
    body, media_type = _image(angos, ns, alg)
    d = digest_of(body, alg)
    tags = ["a", "b"] + [f"1.{i}" for i in range(8)]  # the spec asks for at least 10 per request
    r = put_manifest(angos, ns, d, body, media_type, params=[("tag", t) for t in tags])
    assert r.status_code == 201, r.text
    assert r.headers["Docker-Content-Digest"] == d
    # requests folds repeated headers into one comma-separated value (RFC 9110 5.3).
    assert sorted(t.strip() for t in r.headers["OCI-Tag"].split(",")) == sorted(tags)
    for tag in tags:
        _assert_served(angos, ns, tag, body, media_type, d)
    assert requests.get(angos.v2(f"{ns}/tags/list")).json()["tags"] == sorted(tags)


@pytest.mark.parametrize("alg", ALGS)
def test_by_digest_put_whose_body_has_another_digest_is_digest_invalid(angos, alg):
    ns = uniq("man")
    body, media_type = _image(angos, ns, alg)
    wrong = digest_of(body + b" ", alg)
    assert_oci_error(put_manifest(angos, ns, wrong, body, media_type), 400, "DIGEST_INVALID")
    assert_oci_error(requests.get(angos.v2(f"{ns}/manifests/{wrong}")), 404, "MANIFEST_UNKNOWN")


def test_pushing_a_tag_again_moves_it_to_the_new_manifest(angos):
    ns = uniq("man")
    first, _, mt, _ = push_image(angos, ns, tag="latest")
    second, body, _, _ = push_image(angos, ns, tag="latest")
    assert first != second
    _assert_served(angos, ns, "latest", body, mt, second)
    assert requests.get(angos.v2(f"{ns}/manifests/{first}")).status_code == 200  # the old revision stays


@pytest.mark.parametrize("alg", ALGS)
def test_unknown_manifest_is_404_manifest_unknown(angos, alg):
    ns = uniq("man")
    push_image(angos, ns, alg, tag="exists")
    for ref in ("missing", digest_of(b"nope", alg)):
        assert requests.head(angos.v2(f"{ns}/manifests/{ref}")).status_code == 404
        assert_oci_error(requests.get(angos.v2(f"{ns}/manifests/{ref}")), 404, "MANIFEST_UNKNOWN")
        assert_oci_error(requests.delete(angos.v2(f"{ns}/manifests/{ref}")), 404, "MANIFEST_UNKNOWN")


def test_tag_delete_answers_202_and_keeps_the_revision(angos):
    ns = uniq("man")
    d, body, mt, _ = push_image(angos, ns, tag="gone")
    r = requests.delete(angos.v2(f"{ns}/manifests/gone"))
    assert r.status_code == 202
    assert_oci_error(requests.get(angos.v2(f"{ns}/manifests/gone")), 404, "MANIFEST_UNKNOWN")
    assert_oci_error(requests.delete(angos.v2(f"{ns}/manifests/gone")), 404, "MANIFEST_UNKNOWN")
    _assert_served(angos, ns, d, body, mt, d)


@pytest.mark.parametrize("alg", ALGS)
def test_manifest_delete_by_digest_removes_the_tags_pointing_at_it(angos, alg):
    ns = uniq("man")
    body, mt = _image(angos, ns, alg)
    d = digest_of(body, alg)
    assert put_manifest(angos, ns, d, body, mt, params=[("tag", "one"), ("tag", "two")]).status_code == 201
    keep, _, _, _ = push_image(angos, ns, alg, tag="keep")
    r = requests.delete(angos.v2(f"{ns}/manifests/{d}"))
    assert r.status_code == 202
    for ref in ("one", "two", d):
        assert_oci_error(requests.get(angos.v2(f"{ns}/manifests/{ref}")), 404, "MANIFEST_UNKNOWN")
    assert requests.get(angos.v2(f"{ns}/tags/list")).json()["tags"] == ["keep"]
    assert requests.get(angos.v2(f"{ns}/manifests/keep")).headers["Docker-Content-Digest"] == keep


def test_layers_with_urls_are_accepted(angos, strict_angos):
    for server in (angos, strict_angos):  # the strict server checks references; urls layers are exempt
        ns = uniq("man")
        config = b'{"os":"windows"}'
        push_blob(server, ns, config)
        foreign = descriptor(OCI_NONDIST_LAYER, b"never uploaded: lives at the url",
                             urls=["https://example.invalid/layer.tar.gz"])
        body = image_manifest(descriptor(OCI_CONFIG, config), [foreign])
        r = put_manifest(server, ns, "win", body, OCI_MANIFEST)
        assert r.status_code == 201, r.text
        assert requests.get(server.v2(f"{ns}/manifests/win")).content == body


@pytest.mark.parametrize("alg", ALGS)
def test_missing_references_are_manifest_blob_unknown_when_not_allowed(strict_angos, alg):
    ns = uniq("man")
    config, layer = b'{"os":"linux"}', random_bytes(300)
    body = image_manifest(descriptor(OCI_CONFIG, config, alg), [descriptor(OCI_LAYER, layer, alg)])
    assert_oci_error(put_manifest(strict_angos, ns, "mutable-x", body, OCI_MANIFEST), 404, "MANIFEST_BLOB_UNKNOWN")
    push_blob(strict_angos, ns, config, alg)
    assert_oci_error(put_manifest(strict_angos, ns, "mutable-x", body, OCI_MANIFEST), 404, "MANIFEST_BLOB_UNKNOWN")
    # A blob held by another namespace does not count.
    push_blob(strict_angos, uniq("man"), layer, alg)
    assert_oci_error(put_manifest(strict_angos, ns, "mutable-x", body, OCI_MANIFEST), 404, "MANIFEST_BLOB_UNKNOWN")
    push_blob(strict_angos, ns, layer, alg)
    assert put_manifest(strict_angos, ns, "mutable-x", body, OCI_MANIFEST).status_code == 201
    # An index whose child manifest is missing.
    index = index_manifest([descriptor(OCI_MANIFEST, body + b"\n", alg)])
    assert_oci_error(put_manifest(strict_angos, ns, "mutable-i", index, OCI_INDEX), 404, "MANIFEST_BLOB_UNKNOWN")
    index = index_manifest([descriptor(OCI_MANIFEST, body, "sha256")])
    assert put_manifest(strict_angos, ns, "mutable-i", index, OCI_INDEX).status_code == 201
    assert_oci_error(requests.get(strict_angos.v2(f"{ns}/manifests/{digest_of(b'x')}")), 404, "MANIFEST_UNKNOWN")


def test_manifest_over_max_manifest_size_is_413(strict_angos):
    ns = uniq("man")
    config = b'{"os":"linux"}'
    push_blob(strict_angos, ns, config)
    body = image_manifest(descriptor(OCI_CONFIG, config), [], annotations={"pad": "x" * STRICT_MAX_MANIFEST})
    assert len(body) > STRICT_MAX_MANIFEST
    assert_oci_error(put_manifest(strict_angos, ns, "mutable-big", body, OCI_MANIFEST), 413, "MANIFEST_INVALID")
    assert_oci_error(requests.get(strict_angos.v2(f"{ns}/manifests/mutable-big")), 404, "MANIFEST_UNKNOWN")
    # Exactly at the limit is accepted.
    base = image_manifest(descriptor(OCI_CONFIG, config), [], annotations={"pad": ""})
    exact = image_manifest(descriptor(OCI_CONFIG, config), [],
                           annotations={"pad": "x" * (STRICT_MAX_MANIFEST - len(base))})
    assert len(exact) == STRICT_MAX_MANIFEST
    assert put_manifest(strict_angos, ns, "mutable-exact", exact, OCI_MANIFEST).status_code == 201
    # Streamed without Content-Length, the limit still holds.
    r = requests.put(strict_angos.v2(f"{ns}/manifests/mutable-big"), data=iter([body[:1000], body[1000:]]),
                     headers={"Content-Type": OCI_MANIFEST})
    assert_oci_error(r, 413, "MANIFEST_INVALID")
    assert_oci_error(requests.get(strict_angos.v2(f"{ns}/manifests/mutable-big")), 404, "MANIFEST_UNKNOWN")


@pytest.mark.parametrize("content_type, doc_type", [
    (DOCKER_MANIFEST, OCI_MANIFEST),
    (OCI_MANIFEST, DOCKER_MANIFEST),
    (OCI_INDEX, OCI_MANIFEST),
    (OCI_MANIFEST, OCI_INDEX),
])
def test_content_type_that_disagrees_with_the_body_media_type_is_manifest_invalid(angos, content_type, doc_type):
    ns = uniq("man")
    _, body, _, _ = push_image(angos, ns)
    doc = json.loads(body)
    if doc_type in (OCI_INDEX,):
        doc = json.loads(index_manifest([descriptor(OCI_MANIFEST, body)], doc_type))
    else:
        doc["mediaType"] = doc_type
    r = put_manifest(angos, ns, "mismatch", json.dumps(doc).encode(), content_type)
    assert_oci_error(r, 400, "MANIFEST_INVALID")
    assert_oci_error(requests.get(angos.v2(f"{ns}/manifests/mismatch")), 404, "MANIFEST_UNKNOWN")


@pytest.mark.parametrize("body", [b"{not json", b"[]", b'"a string"', b"", json.dumps(
    {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": {"mediaType": OCI_CONFIG, "digest": "sha256:bad",
                                                               "size": 2}, "layers": []}).encode()])
def test_invalid_manifest_bodies_are_manifest_invalid(angos, body):
    ns = uniq("man")
    push_image(angos, ns, tag="exists")
    assert_oci_error(put_manifest(angos, ns, "bad", body, OCI_MANIFEST), 400, "MANIFEST_INVALID")


@pytest.mark.parametrize("tag", ["-leading-dash", ".dot", "a" * 129, "sp ace", "ümlaut", "has:colon"])
def test_invalid_tags_are_tag_invalid(angos, tag):
    ns = uniq("man")
    body, mt = _image(angos, ns, "sha256")
    if ":" not in tag:  # in the path "has:colon" is a (malformed) digest reference: DIGEST_INVALID
        assert_oci_error(put_manifest(angos, ns, tag, body, mt), 400, "TAG_INVALID")
        assert_oci_error(requests.get(angos.v2(f"{ns}/manifests/{tag}")), 400, "TAG_INVALID")
    d = digest_of(body)
    assert_oci_error(put_manifest(angos, ns, d, body, mt, params=[("tag", "ok"), ("tag", tag)]), 400, "TAG_INVALID")
    assert requests.get(angos.v2(f"{ns}/manifests/ok")).status_code == 404  # all or nothing


def test_valid_tag_grammar_edges_are_accepted(angos):
    ns = uniq("man")
    body, mt = _image(angos, ns, "sha256")
    for tag in ("_underscore", "A.b-C_9", "9" * 128):
        assert put_manifest(angos, ns, tag, body, mt).status_code == 201, tag


@pytest.mark.parametrize("alg", ALGS)
def test_immutable_tag_refuses_a_different_digest_and_accepts_the_same_one(strict_angos, alg):
    ns = uniq("man")
    first, body, mt, _ = push_image(strict_angos, ns, alg, tag="v1")
    r = put_manifest(strict_angos, ns, "v1", body, mt)
    assert r.status_code == 201  # same digest: a no-op success
    assert r.headers["Docker-Content-Digest"] == first
    other, other_body, _, _ = push_image(strict_angos, ns, alg)
    assert_oci_error(put_manifest(strict_angos, ns, "v1", other_body, mt), 409, "CONFLICT")
    assert_oci_error(put_manifest(strict_angos, ns, other, other_body, mt, params={"tag": "v1"}), 409, "CONFLICT")
    assert requests.get(strict_angos.v2(f"{ns}/manifests/v1")).content == body
    # Tags matching immutable_tags_exclusions stay mutable.
    assert put_manifest(strict_angos, ns, "mutable-dev", body, mt).status_code == 201
    assert put_manifest(strict_angos, ns, "mutable-dev", other_body, mt).status_code == 201
    assert requests.get(strict_angos.v2(f"{ns}/manifests/mutable-dev")).content == other_body


def test_media_type_from_content_type_is_stored_when_the_body_has_none(angos):
    ns = uniq("man")
    config = b'{"os":"linux"}'
    push_blob(angos, ns, config)
    image = json.dumps({"schemaVersion": 2, "config": descriptor(OCI_CONFIG, config), "layers": []}).encode()
    index = json.dumps({"schemaVersion": 2, "manifests": [descriptor(OCI_MANIFEST, image)]}).encode()
    for body, media_type, tag in ((image, OCI_MANIFEST, "image"), (index, OCI_INDEX, "index")):
        assert "mediaType" not in json.loads(body)
        r = put_manifest(angos, ns, tag, body, media_type)
        assert r.status_code == 201, r.text
        _assert_served(angos, ns, tag, body, media_type, digest_of(body))
