"""Hostile writes that used to get through, half-succeed or crash (issue 12, items 2-8, 12, 13).

Each case refuses the request with its OCI error and leaves every stored byte as it was
(the ``unchanged`` snapshot of :mod:`tests.test_hostile`), or, where the request is allowed,
shows exactly what changed.
"""

from __future__ import annotations

import json

import pytest
import requests

from tests.api.helpers import (OCI_CONFIG, OCI_INDEX, OCI_MANIFEST, assert_oci_error, descriptor, digest_of,
                               image_manifest, index_manifest, manifest_descriptor, push_blob, put_manifest,
                               raw_request)
from tests.conftest import AngosServer, angos_config, free_port
from tests.test_hostile import snapshot

NS = "hard/app"


def _server(tmp_path_factory, extra: str = "", policy: str = "allow", rules: list[str] | None = None):
    workdir = tmp_path_factory.mktemp("angos-hard")
    port = free_port()
    text = angos_config(workdir / "data", port, 1, extra, policy)
    if rules is not None:
        text = text.replace(f'default = "{policy}"\n',
                            f'default = "{policy}"\nrules = {json.dumps(rules)}\n')
    return AngosServer(workdir, text, port).start()


def _image(server, seed: str) -> tuple[bytes, str]:
    config = json.dumps({"seed": seed}).encode()
    push_blob(server, NS, config)
    body = image_manifest(descriptor(OCI_CONFIG, config), [])
    return body, digest_of(body)


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    srv = _server(tmp_path_factory, "[global]\nmax_manifest_references = 4\n")
    body, _ = _image(srv, "base")
    assert put_manifest(srv, NS, "v1", body, OCI_MANIFEST).status_code == 201
    yield srv
    srv.stop(timeout=10)


@pytest.fixture
def unchanged(plain):
    before = snapshot(plain)
    yield
    assert snapshot(plain) == before


# -- 4: a trailing newline is not part of a valid name, tag, digest or upload id


@pytest.mark.parametrize("path", [
    f"/v2/{NS}/manifests/v1%0A",
    f"/v2/{NS}/manifests/sha256:{'a' * 64}%0A",
    f"/v2/{NS}%0A/manifests/v1",
])
def test_a_trailing_newline_is_refused_in_references(plain, path):
    body, _ = _image(plain, "nl")
    before = snapshot(plain)
    r = raw_request(plain, "PUT", path, body, {"Content-Type": OCI_MANIFEST})
    assert r.status_code in (400, 404), r.text   # a name with a newline matches no route at all
    assert r.json()["errors"][0]["code"] in ("TAG_INVALID", "DIGEST_INVALID", "NAME_INVALID", "NAME_UNKNOWN")
    assert snapshot(plain) == before


def test_a_trailing_newline_in_a_tag_query_writes_nothing(plain):
    body, d = _image(plain, "nlq")
    before = snapshot(plain)
    r = raw_request(plain, "PUT", f"/v2/{NS}/manifests/{d}?tag=brandnew%0A", body, {"Content-Type": OCI_MANIFEST})
    assert_oci_error(r, 400, "TAG_INVALID")
    assert snapshot(plain) == before


def test_a_trailing_newline_in_mount_source_or_upload_id_is_refused(plain, unchanged):
    d = digest_of(json.dumps({"seed": "base"}).encode())
    r = raw_request(plain, "POST", f"/v2/other/app/blobs/uploads/?mount={d}&from={NS}%0A")
    assert r.status_code in (202, 400), r.text
    if r.status_code == 202:  # refused as a mount source: a plain upload session, which we cancel
        assert requests.delete(plain.url + r.headers["Location"]).status_code == 204
    for path in (f"/v2/{NS}/blobs/uploads/00000000-0000-4000-8000-000000000000%0A",):
        assert raw_request(plain, "GET", path).status_code == 404


# -- 5: media types


def test_a_media_type_with_a_newline_is_manifest_invalid(plain, unchanged):
    config = json.dumps({"seed": "base"}).encode()
    doc = json.loads(image_manifest(descriptor(OCI_CONFIG, config), []))
    doc["mediaType"] = OCI_MANIFEST + "\n"
    r = put_manifest(plain, NS, "mt", json.dumps(doc).encode(), OCI_MANIFEST)
    assert_oci_error(r, 400, "MANIFEST_INVALID")
    doc["mediaType"] = OCI_MANIFEST
    doc["config"]["mediaType"] = OCI_CONFIG + "\n"
    assert_oci_error(put_manifest(plain, NS, "mt", json.dumps(doc).encode(), OCI_MANIFEST), 400, "MANIFEST_INVALID")


# -- 6: nesting


def test_deeply_nested_json_is_manifest_invalid(plain, unchanged):
    body = b"[" * 1000 + b"]" * 1000
    assert_oci_error(put_manifest(plain, NS, "deep", body, OCI_MANIFEST), 400, "MANIFEST_INVALID")
    body = b'{"a":' * 1000 + b"1" + b"}" * 1000
    assert_oci_error(put_manifest(plain, NS, "deep", body, OCI_MANIFEST), 400, "MANIFEST_INVALID")


# -- 7: replicated author times


@pytest.mark.parametrize("stamp", ["0001-01-01T00:00:00+14:00", "0001-01-01T00:00:00Z", "1969-12-31T23:59:59Z",
                                   "yesterday", "2026-01-01T00:00:00", "2026-13-01T00:00:00Z"])
def test_a_source_timestamp_out_of_range_or_malformed_is_400(plain, stamp):
    body, _ = _image(plain, "ts")
    before = snapshot(plain)
    r = requests.put(plain.v2(f"{NS}/manifests/ts"), data=body,
                     headers={"Content-Type": OCI_MANIFEST, "X-Angos-Source-Timestamp": stamp})
    assert_oci_error(r, 400, "UNSUPPORTED")
    assert "X-Angos-Source-Timestamp" in r.json()["errors"][0]["message"]
    r = requests.delete(plain.v2(f"{NS}/manifests/v1"), headers={"X-Angos-Source-Timestamp": stamp})
    assert_oci_error(r, 400, "UNSUPPORTED")
    assert snapshot(plain) == before


def test_a_far_future_source_timestamp_is_clamped_to_now(plain):
    body, d = _image(plain, "future")
    r = requests.put(plain.v2(f"{NS}/manifests/future"), data=body,
                     headers={"Content-Type": OCI_MANIFEST, "X-Angos-Source-Timestamp": "9999-12-31T23:59:59+14:00"})
    assert r.status_code == 201, r.text
    state = requests.get(plain.url + f"/_ext/{NS}/_tags").json()["tags"]
    (entry,) = [e for e in state if e["name"] == "future"]
    assert entry["digest"] == d and entry["created_at"] < "2100"


# -- 8: cross-site requests


@pytest.mark.parametrize("headers", [{"Sec-Fetch-Site": "cross-site"}, {"Sec-Fetch-Site": "same-site"},
                                     {"Origin": "http://evil.example"}, {"Origin": "null"}])
def test_browser_marked_cross_site_writes_are_refused_everywhere(plain, unchanged, headers):
    data = b"cross-site"
    r = requests.post(plain.v2(f"{NS}/blobs/uploads/?digest={digest_of(data)}"), data=data, headers=headers)
    assert_oci_error(r, 403, "DENIED")
    assert_oci_error(requests.delete(plain.v2(f"{NS}/manifests/v1"), headers=headers), 403, "DENIED")
    r = requests.post(plain.url + f"/_ext/_jobs/failed/{'0' * 16}-00000000-0000-0000-0000-000000000000/retry"
                      "?queue=replication", headers=headers)
    assert_oci_error(r, 403, "DENIED")


def test_origin_is_compared_by_scheme_host_and_port(plain, unchanged):
    data = b"origin"
    url = plain.v2(f"{NS}/blobs/uploads/?digest={digest_of(data)}")
    for origin in (plain.url.replace("http://", "https://"), plain.url.rsplit(":", 1)[0] + ":1",
                   plain.url.replace("127.0.0.1", "localhost")):
        assert_oci_error(requests.post(url, data=data, headers={"Origin": origin}), 403, "DENIED")


def test_same_origin_and_unmarked_writes_are_served(plain):
    for i, headers in enumerate(({"Origin": plain.url}, {"Sec-Fetch-Site": "same-origin"}, {})):
        data = f"same-{i}".encode()
        r = requests.post(plain.v2(f"{NS}/blobs/uploads/?digest={digest_of(data)}"), data=data, headers=headers)
        assert r.status_code == 201, (headers, r.text)


# -- 12: references per manifest


def test_an_index_with_more_children_than_the_limit_is_refused(plain, unchanged):
    children = [manifest_descriptor(json.dumps({"n": i}).encode(), OCI_MANIFEST) for i in range(5)]
    r = put_manifest(plain, NS, "wide", index_manifest(children), OCI_INDEX)
    assert_oci_error(r, 400, "MANIFEST_INVALID")
    assert "the limit is 4 (global.max_manifest_references)" in r.json()["errors"][0]["message"]


# -- 3: all tags or none


@pytest.fixture(scope="module")
def immutable(tmp_path_factory):
    srv = _server(tmp_path_factory, "[global]\nimmutable_tags = true\n")
    yield srv
    srv.stop(timeout=10)


def test_a_refused_tag_leaves_the_other_tags_of_the_request_unwritten(immutable):
    first, d1 = _image(immutable, "one")
    assert put_manifest(immutable, NS, "v1", first, OCI_MANIFEST).status_code == 201
    second, d2 = _image(immutable, "two")
    before = snapshot(immutable)
    r = put_manifest(immutable, NS, d2, second, OCI_MANIFEST, params=[("tag", "new"), ("tag", "v1")])
    assert_oci_error(r, 409, "CONFLICT")
    assert snapshot(immutable) == before   # neither "new" nor the revision was written
    assert requests.head(immutable.v2(f"{NS}/manifests/new")).status_code == 404


def test_a_superseded_replicated_write_leaves_no_tag_behind(plain):
    body, d = _image(plain, "sup")
    assert put_manifest(plain, NS, "held", body, OCI_MANIFEST).status_code == 201
    other, d2 = _image(plain, "sup2")
    before = snapshot(plain)
    r = requests.put(plain.v2(f"{NS}/manifests/{d2}"), data=other, params=[("tag", "fresh"), ("tag", "held")],
                     headers={"Content-Type": OCI_MANIFEST, "X-Angos-Source-Timestamp": "2001-01-01T00:00:00Z"})
    assert_oci_error(r, 409, "REPLICATION_SUPERSEDED")
    after = snapshot(plain)
    # Nothing of the write is left; the one new file is its record in the conflict log (issue 15).
    added = {k for k in after if k not in before}
    assert {k: v for k, v in after.items() if k not in added} == before
    (record,) = added
    assert record.startswith("data/_replication/conflicts/")
    (logged,) = requests.get(plain.url + "/_ext/_replication/conflicts").json()["conflicts"]
    assert (logged["tag"], logged["winner"]["digest"], logged["loser"]["digest"]) == ("held", d, d2)
    assert requests.get(plain.url + "/_ext/_jobs?queue=replication").json()["jobs"] == []


# -- 13: an immutable tag stays immutable after a delete


def test_a_deleted_immutable_tag_cannot_be_pointed_elsewhere(immutable):
    body, d = _image(immutable, "keep")
    assert put_manifest(immutable, NS, "rel", body, OCI_MANIFEST).status_code == 201
    assert requests.delete(immutable.v2(f"{NS}/manifests/rel")).status_code == 202
    other, _ = _image(immutable, "swap")
    before = snapshot(immutable)
    r = put_manifest(immutable, NS, "rel", other, OCI_MANIFEST)
    assert_oci_error(r, 409, "CONFLICT")
    assert "repoint-immutable-tag" in r.json()["errors"][0]["message"]
    assert snapshot(immutable) == before
    # The same content may come back under its name.
    assert put_manifest(immutable, NS, "rel", body, OCI_MANIFEST).status_code == 201


def test_an_explicit_grant_lets_an_operator_repoint_a_deleted_immutable_tag(tmp_path_factory):
    rules = ["identity.id == null && request.action != 'repoint-immutable-tag'",
             "request.action == 'repoint-immutable-tag' && request.reference == 'rel'"]
    srv = _server(tmp_path_factory, "[global]\nimmutable_tags = true\n", policy="deny", rules=rules)
    try:
        for tag in ("rel", "other"):
            body, _ = _image(srv, f"{tag}-1")
            assert put_manifest(srv, NS, tag, body, OCI_MANIFEST).status_code == 201
            assert requests.delete(srv.v2(f"{NS}/manifests/{tag}")).status_code == 202
            body, d = _image(srv, f"{tag}-2")
            r = put_manifest(srv, NS, tag, body, OCI_MANIFEST)
            if tag == "rel":
                assert r.status_code == 201 and r.headers["Docker-Content-Digest"] == d
            else:
                assert_oci_error(r, 409, "CONFLICT")
    finally:
        srv.stop(timeout=10)


# -- 2: ?tag= cannot slip past a rule about tag names


def test_tags_of_a_by_digest_push_are_checked_as_tag_pushes(tmp_path_factory):
    rules = ["request.action in ['start-upload', 'update-upload', 'complete-upload', 'get-manifest']",
             "request.action == 'put-manifest' && has(request.digest)",   # untagged pushes by digest
             "request.action == 'put-manifest' && request.reference.startsWith('dev-')",
             "request.action == 'put-manifest' && has(request.tags) && 'release' in request.tags"]
    srv = _server(tmp_path_factory, policy="deny", rules=rules)
    try:
        body, d = _image(srv, "p")
        assert put_manifest(srv, NS, "prod", body, OCI_MANIFEST).status_code == 401
        before = snapshot(srv)
        r = put_manifest(srv, NS, d, body, OCI_MANIFEST, params=[("tag", "prod")])
        assert r.status_code == 401   # anonymous: refused (401 with a challenge), as a push of :prod would be
        r = put_manifest(srv, NS, d, body, OCI_MANIFEST, params=[("tag", "dev-1"), ("tag", "prod")])
        assert r.status_code == 401
        assert snapshot(srv) == before
        r = put_manifest(srv, NS, d, body, OCI_MANIFEST, params=[("tag", "dev-1"), ("tag", "dev-2")])
        assert r.status_code == 201 and r.headers["OCI-Tag"] == "dev-1, dev-2"
        # request.tags is visible to rules: a release push may carry any companion tag.
        r = put_manifest(srv, NS, d, body, OCI_MANIFEST, params=[("tag", "prod"), ("tag", "release")])
        assert r.status_code == 201
    finally:
        srv.stop(timeout=10)
