"""Hostile input over real HTTP: every request gets its OCI error and leaves the store unchanged.

The server keeps its data four directories below its work directory, so a
request that escaped the store root by up to four ``..`` would land inside the
snapshot. Each case snapshots the work directory (file list + content hashes,
ignoring the ``_locks`` and ``_jobs`` directories, temporary files and the
server log), sends the request byte for byte with ``http.client`` (``requests``
would normalise dot segments), checks the OCI error and compares snapshots.

Canaries: a traversal that escaped and found nothing would answer 404 like a
refusal. So wherever each traversal input would land if it were joined into
the storage layout as is (a namespace tree, a blob, a grant, a manifest
revision, a tag record, an upload session), the module plants a copy of real
stored content that carries :data:`CANARY`; an escape would then read (and
serve, or change) it. Every traversal answer is checked for the canary, and the
snapshot covers the planted copies.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import socket
from pathlib import Path
from urllib.parse import unquote

import pytest
import requests
from requests.structures import CaseInsensitiveDict

from tests.api.helpers import (OCI_CONFIG, OCI_INDEX, OCI_MANIFEST, RawResponse, assert_error_shape,
                               assert_oci_error, descriptor, digest_of, image_manifest, push_blob, raw_request,
                               start_upload)
from tests.conftest import AngosServer, angos_config, free_port, snapshot_diff, tree_snapshot
from angos.server import MAX_HEADER_FIELD, MAX_HEADER_FIELDS

MAX_MANIFEST = 4096
NS = "hostile/app"
CANARY_NS = "hostile/canary"
# What a request that escaped its directory would read back. Fixed, not random: test ids are built
# from it, and every pytest-xdist worker must collect the same tests.
CANARY = "canary-5f0c2d7e9b8a4c61a3e2f0d4b6c8e1a7"
CANARY_BLOB = b"blob bytes of the " + CANARY.encode()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("angos-hostile")
    port = free_port()
    data = workdir / "w" / "x" / "y" / "data"
    srv = AngosServer(workdir, angos_config(data, port, 2, f"[global]\nmax_manifest_size = {MAX_MANIFEST}\n"),
                      port).start()
    srv.data = data
    # Some content to protect: a blob, an image and a tag.
    config = b'{"os":"linux"}'
    push_blob(srv, NS, config)
    srv.manifest = image_manifest(descriptor(OCI_CONFIG, config), [])
    st = raw_request(srv, "PUT", f"/v2/{NS}/manifests/v1", srv.manifest, {"Content-Type": OCI_MANIFEST})
    assert st.status_code == 201
    plant_canaries(srv)
    # The snapshot must see the store, or "unchanged" would prove nothing.
    assert sum("/data/" in key for key in snapshot(srv)) >= 3
    yield srv
    srv.stop(timeout=10)


def plant_canaries(server) -> None:
    """Store an image and an upload session carrying :data:`CANARY`, then copy their files to
    every place a traversal input of this module would reach if joined into the layout as is."""
    data = server.data
    push_blob(server, CANARY_NS, CANARY_BLOB)
    body = image_manifest(descriptor(OCI_CONFIG, CANARY_BLOB), [], annotations={"canary": CANARY})
    for tag in ("v1", "latest"):
        assert raw_request(server, "PUT", f"/v2/{CANARY_NS}/manifests/{tag}", body,
                           MANIFEST_HEADERS).status_code == 201
    session = start_upload(server, NS).split(str(server.port), 1)[1]
    assert raw_request(server, "PATCH", session, CANARY_BLOB).status_code == 202
    blob_hex, manifest_hex = digest_of(CANARY_BLOB).split(":")[1], digest_of(body).split(":")[1]
    tree = data / "repositories" / CANARY_NS
    sources = {
        "ns": tree,
        "upload": data / "uploads" / session.rsplit("/", 1)[1],
        "blob": data / "blobs" / "sha256" / blob_hex[:2] / blob_hex,
        "grant": tree / "_layers" / "sha256" / blob_hex,
        "revision": tree / "_manifests" / "revisions" / "sha256" / manifest_hex,
        "tag": tree / "_manifests" / "tags" / "v1",
    }
    planted = 0
    for kind, relative in escape_targets():
        if "\0" in relative:
            continue  # no file name can hold a NUL
        target = Path(os.path.normpath(data / relative))
        # Only inside the work directory (never elsewhere on the machine), never over real content.
        if server.workdir not in target.parents or target.exists():
            continue
        try:
            if sources[kind].is_dir():
                shutil.copytree(sources[kind], target)
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(sources[kind], target)
        except (FileExistsError, NotADirectoryError):
            continue  # a path through a planted or stored file: no escape can land there either
        planted += 1
    assert raw_request(server, "DELETE", session).status_code == 204
    assert planted >= 20, planted
    # A planted copy is served when a request does reach it: "a/./b" resolved would be the valid
    # name a/b, whose directory is now a copy of the canary namespace.
    reached = raw_request(server, "GET", "/v2/a/b/manifests/v1", headers={"Accept": OCI_MANIFEST})
    assert reached.status_code == 200 and CANARY.encode() in reached.content


def _decodings(value: str) -> set[str]:
    """``value`` as sent and as a server might decode it (once or twice)."""
    return {value, unquote(value), unquote(unquote(value))}


def escape_targets():
    """(source kind, path relative to the data root) for every traversal input of this module."""
    for name in NAME_TRAVERSALS:
        for v in _decodings(name):
            yield "ns", f"repositories/{v}"
    for digest in DIGEST_TRAVERSALS:
        for v in _decodings(digest):
            alg, _, hexpart = v.partition(":") if ":" in v else ("sha256", "", v)
            yield "blob", f"blobs/{alg}/{hexpart[:2]}/{hexpart}"
            yield "grant", f"repositories/{NS}/_layers/{alg}/{hexpart}"
            yield "revision", f"repositories/{NS}/_manifests/revisions/{alg}/{hexpart}"
    for upload_id in UPLOAD_IDS:
        for v in _decodings(upload_id):
            yield "upload", f"uploads/{v}"
    for tag in TAG_TRAVERSALS:
        for v in _decodings(tag):
            yield "tag", f"repositories/{NS}/_manifests/tags/{v}"


def no_canary(resp) -> None:
    """Nothing planted outside a request's own directory came back in the answer."""
    assert CANARY.encode() not in resp.content and CANARY_BLOB not in resp.content, resp.text[:500]
    leaked = [k for k, v in resp.headers.items() if digest_of(CANARY_BLOB) in v or CANARY in v]
    assert leaked == [], leaked


def snapshot(server) -> dict[str, str]:
    return tree_snapshot(server.workdir, skip=lambda rel: rel in ("server.log", "config.toml"))


@pytest.fixture
def unchanged(server):
    """Assert after the test that the store (and everything around it) is byte-identical."""
    holder = {}

    def arm():
        holder["before"] = snapshot(server)

    yield arm
    assert "before" in holder, "test never armed the snapshot"
    after = snapshot(server)
    assert after == holder["before"], snapshot_diff(holder["before"], after)


def _any_oci_error(resp, statuses=(400, 404)) -> list[str]:
    assert resp.status_code in statuses, (resp.status_code, resp.text)
    return assert_error_shape(resp)


D = digest_of(b"x")
MANIFEST_HEADERS = {"Content-Type": OCI_MANIFEST}

NAME_TRAVERSALS = [
    "../../../../etc",
    "a/../../../../x",
    "%2e%2e/%2e%2e/%2e%2e/x",
    "a/%2e%2e/%2E%2E/b",
    "..%2F..%2F..%2Fx",
    "a%2F..%2F..%2Fb",
    "%2Fetc%2Fpasswd",
    "%2Ftmp",
    "a/./b",
    ".",
    "a\\..\\..\\b",
    "a%00b",
]


@pytest.mark.parametrize("name", NAME_TRAVERSALS)
@pytest.mark.parametrize("method, suffix, body", [
    ("GET", "/tags/list", None),
    ("PUT", "/manifests/latest", "manifest"),
    ("GET", f"/blobs/{D}", None),
    ("GET", "/blobs/" + digest_of(CANARY_BLOB), None),  # granted in every planted namespace tree
    ("GET", "/manifests/v1", None),
    ("POST", f"/blobs/uploads/?digest={D}", b"x"),
    ("POST", "/blobs/uploads/", None),
    ("DELETE", "/manifests/v1", None),
])
def test_path_traversal_in_names_is_refused(server, unchanged, name, method, suffix, body):
    unchanged()
    data = server.manifest if body == "manifest" else body
    r = raw_request(server, method, f"/v2/{name}{suffix}", data, MANIFEST_HEADERS if body == "manifest" else None)
    no_canary(r)
    codes = _any_oci_error(r)
    # A name that reaches the router is judged by the name grammar; one that no route
    # can match (an encoded slash turned into extra segments) is an unknown endpoint.
    assert set(codes) <= {"NAME_INVALID", "NAME_UNKNOWN", "BLOB_UNKNOWN", "MANIFEST_UNKNOWN"}, codes
    if r.status_code == 400:
        assert codes == ["NAME_INVALID"]


def test_absolute_path_as_name_is_refused(server, unchanged):
    unchanged()
    for path in ("/v2//etc/passwd/tags/list", "/v2///tmp/x/blobs/uploads/", f"/v2//{NS}/manifests/v1"):
        r = raw_request(server, "POST" if "uploads" in path else "GET", path)
        assert r.status_code in (400, 404), (path, r.status_code, r.text)
        assert_error_shape(r)


DIGEST_TRAVERSALS = [
    "sha256:..%2F..%2F..%2Fetc%2Fpasswd",
    "sha256:%2e%2e",
    "..",
    "%2e%2e",
    "sha256:/etc/passwd",
    "sha256%2F..%2F..%2F" + "a" * 64,
    "sha256:" + "a" * 62 + "%2F.",
    "sha256:" + "a" * 64 + "%00",
]


@pytest.mark.parametrize("digest", DIGEST_TRAVERSALS)
def test_path_traversal_in_digests_is_refused(server, unchanged, digest):
    unchanged()
    for method, path, body, headers in [
        ("GET", f"/v2/{NS}/blobs/{digest}", None, None),
        ("DELETE", f"/v2/{NS}/blobs/{digest}", None, None),
        ("GET", f"/v2/{NS}/manifests/{digest}", None, None),
        ("PUT", f"/v2/{NS}/manifests/{digest}", server.manifest, MANIFEST_HEADERS),
        ("DELETE", f"/v2/{NS}/manifests/{digest}", None, None),
        ("GET", f"/v2/{NS}/referrers/{digest}", None, None),
    ]:
        r = raw_request(server, method, path, body, headers)
        no_canary(r)
        codes = _any_oci_error(r)
        assert set(codes) <= {"DIGEST_INVALID", "TAG_INVALID", "NAME_UNKNOWN", "MANIFEST_UNKNOWN"}, (path, codes)
        if r.status_code == 400 and "/blobs/" in path:
            assert codes == ["DIGEST_INVALID"]
    # In a query string the value always reaches the digest parser.
    for query in (f"digest={digest}", f"mount={digest}&from={NS}"):
        r = raw_request(server, "POST", f"/v2/{NS}/blobs/uploads/?{query}", b"x")
        assert_oci_error(r, 400, "DIGEST_INVALID")


UPLOAD_IDS = ["..", "%2e%2e", "..%2F..%2Fx", "../../x", "%2Fetc%2Fpasswd", "x%00",
              "00000000-0000-0000-0000-00000000000.", "info", "B27E7A8E-D567-45B1-8663-93D0C7319EC3"]


@pytest.mark.parametrize("upload_id", UPLOAD_IDS)
def test_path_traversal_in_upload_ids_is_refused(server, unchanged, upload_id):
    unchanged()
    base = f"/v2/{NS}/blobs/uploads/{upload_id}"
    for method, path, body in [("GET", base, None), ("PATCH", base, b"evil"), ("PUT", f"{base}?digest={D}", b"x"),
                               ("DELETE", base, None)]:
        r = raw_request(server, method, path, body)
        no_canary(r)
        codes = _any_oci_error(r)
        assert set(codes) <= {"BLOB_UPLOAD_UNKNOWN", "NAME_UNKNOWN", "NAME_INVALID"}, (method, path, codes)


TAG_TRAVERSALS = ["..", "%2e%2e", "..%2F..%2Fx", "-x", ".hidden", "a" * 129, "t%00", "%2Fetc"]


@pytest.mark.parametrize("tag", TAG_TRAVERSALS)
def test_invalid_tags_are_refused(server, unchanged, tag):
    unchanged()
    r = raw_request(server, "GET", f"/v2/{NS}/manifests/{tag}", headers={"Accept": OCI_MANIFEST})
    no_canary(r)
    assert set(_any_oci_error(r)) <= {"TAG_INVALID", "NAME_UNKNOWN", "MANIFEST_UNKNOWN"}
    r = raw_request(server, "PUT", f"/v2/{NS}/manifests/{tag}", server.manifest, MANIFEST_HEADERS)
    codes = _any_oci_error(r)
    assert set(codes) <= {"TAG_INVALID", "NAME_UNKNOWN"}, codes
    r = raw_request(server, "PUT", f"/v2/{NS}/manifests/{digest_of(server.manifest)}?tag={tag}", server.manifest,
                    MANIFEST_HEADERS)
    assert_oci_error(r, 400, "TAG_INVALID")


def test_manifest_ten_times_over_the_limit_is_413(server, unchanged):
    unchanged()
    body = image_manifest(json.loads(server.manifest)["config"], [],
                          annotations={"pad": "x" * (10 * MAX_MANIFEST)})
    assert len(body) > 10 * MAX_MANIFEST
    for ref in ("big", digest_of(body)):
        r = raw_request(server, "PUT", f"/v2/{NS}/manifests/{ref}", body, MANIFEST_HEADERS)
        assert_oci_error(r, 413, "MANIFEST_INVALID")


@pytest.mark.parametrize("body", [b"{", b"\xff\xfe\x00", b"null", b"[1,2]", b'{"schemaVersion": 1}',
                                  b'{"schemaVersion":2,"mediaType":"' + OCI_MANIFEST.encode() + b'"}',
                                  b'{"schemaVersion":2,"manifests":"nope"}'])
def test_invalid_manifest_json_is_manifest_invalid(server, unchanged, body):
    unchanged()
    r = raw_request(server, "PUT", f"/v2/{NS}/manifests/v1", body, MANIFEST_HEADERS)
    assert_oci_error(r, 400, "MANIFEST_INVALID")


@pytest.mark.parametrize("content_type", [OCI_INDEX, "application/vnd.docker.distribution.manifest.v2+json",
                                          "text/html", "not a media type"])
def test_wrong_content_type_is_manifest_invalid(server, unchanged, content_type):
    unchanged()
    r = raw_request(server, "PUT", f"/v2/{NS}/manifests/v1", server.manifest, {"Content-Type": content_type})
    assert_oci_error(r, 400, "MANIFEST_INVALID")


def test_digests_that_do_not_match_are_digest_invalid(server, unchanged):
    session = start_upload(server, NS)
    path = session.split(str(server.port), 1)[1]
    raw_request(server, "PATCH", path, b"first part")
    unchanged()
    wrong = digest_of(b"something else")
    assert_oci_error(raw_request(server, "POST", f"/v2/{NS}/blobs/uploads/?digest={wrong}", b"body"), 400,
                     "DIGEST_INVALID")
    assert_oci_error(raw_request(server, "PUT", f"{path}?digest={wrong}"), 400, "DIGEST_INVALID")
    assert_oci_error(raw_request(server, "PUT", f"{path}?digest={wrong}", b" and a final chunk"), 400,
                     "DIGEST_INVALID")
    assert_oci_error(raw_request(server, "PUT", f"/v2/{NS}/manifests/{wrong}", server.manifest, MANIFEST_HEADERS),
                     400, "DIGEST_INVALID")


def test_content_range_that_does_not_match_the_body_is_refused(server, unchanged):
    session = start_upload(server, NS)
    path = session.split(str(server.port), 1)[1]
    assert raw_request(server, "PATCH", path, b"0123456789", {"Content-Range": "0-9"}).status_code == 202
    unchanged()
    cases = [
        ({"Content-Range": "10-99"}, b"short", 400, "SIZE_INVALID"),       # range longer than the body
        ({"Content-Range": "10-11"}, b"much longer", 400, "SIZE_INVALID"),  # range shorter than the body
        ({"Content-Range": "0-4"}, b"again", 416, "BLOB_UPLOAD_INVALID"),   # rewinds
        ({"Content-Range": "50-54"}, b"later", 416, "BLOB_UPLOAD_INVALID"),  # leaves a gap
        ({"Content-Range": "bytes=ten-20"}, b"x", 416, "BLOB_UPLOAD_INVALID"),  # not a range at all
        ({"Content-Range": "12-10"}, b"x", 416, "BLOB_UPLOAD_INVALID"),   # backwards
    ]
    for headers, body, status, code in cases:
        assert_oci_error(raw_request(server, "PATCH", path, body, headers), status, code)
    # Streamed (chunked transfer encoding, no Content-Length) with a range the body does not fill.
    r = _chunked_patch(server, path, [b"only", b"nine"], "10-99")
    assert_oci_error(r, 400, "SIZE_INVALID")


def _chunked_patch(server, path: str, parts: list[bytes], content_range: str):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        conn.putrequest("PATCH", path)
        conn.putheader("Transfer-Encoding", "chunked")
        conn.putheader("Content-Range", content_range)
        conn.endheaders()
        for part in parts:
            conn.send(b"%x\r\n%s\r\n" % (len(part), part))
        conn.send(b"0\r\n\r\n")
        resp = conn.getresponse()
        return RawResponse(resp.status, CaseInsensitiveDict(resp.getheaders()), resp.read())
    finally:
        conn.close()


@pytest.mark.parametrize("method, path, code", [
    ("PUT", f"/v2/{NS}/manifests/huge", "MANIFEST_INVALID"),
    ("POST", f"/v2/{NS}/blobs/uploads/?digest={D}", "SIZE_INVALID"),
    ("PATCH", "session", "SIZE_INVALID"),
])
def test_huge_bogus_content_length_is_413_without_reading_the_body(server, unchanged, method, path, code):
    if path == "session":
        path = start_upload(server, NS).split(str(server.port), 1)[1]
    unchanged()
    with socket.create_connection(("127.0.0.1", server.port), timeout=20) as sock:
        sock.sendall(f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Type: {OCI_MANIFEST}\r\n"
                     f"Content-Length: {10 ** 15}\r\n\r\n".encode() + b'{"schemaVersion":2,')
        # Only 19 of the announced 10**15 body bytes are ever sent: any answer at all
        # proves the server refused on the header instead of waiting for (or buffering) the body.
        resp = http.client.HTTPResponse(sock, method=method)
        resp.begin()
        r = RawResponse(resp.status, CaseInsensitiveDict(resp.getheaders()), resp.read())
    assert_oci_error(r, 413, code)


def assert_preserved(server, before: dict[str, str]) -> None:
    """Everything stored before is still there, byte for byte (new objects may have been added)."""
    after = snapshot(server)
    assert {k: after.get(k) for k in before} == before, sorted(k for k in before if after.get(k) != before[k])


@pytest.mark.parametrize("name", ["/".join(["a"] * 128), "x" * 255, "c" * 100 + "/" + "d" * 105])
def test_longest_valid_names_store_blobs_without_touching_other_images(server, name):
    """Issue 12 #1: a 255-character name used to fail mid-write (500) after its grant was stored."""
    before = snapshot(server)
    data = b"blob of a long name " + name[-8:].encode()
    d = digest_of(data)
    r = raw_request(server, "POST", f"/v2/{name}/blobs/uploads/?digest={d}", data)
    assert r.status_code == 201, r.text
    assert raw_request(server, "HEAD", f"/v2/{name}/blobs/{d}").status_code == 200
    body = image_manifest(descriptor(OCI_CONFIG, data), [])
    assert raw_request(server, "PUT", f"/v2/{name}/manifests/v1", body, MANIFEST_HEADERS).status_code == 201
    assert raw_request(server, "GET", f"/v2/{name}/manifests/v1", headers={"Accept": OCI_MANIFEST}).content == body
    assert raw_request(server, "GET", f"/v2/{NS}/manifests/v1", headers={"Accept": OCI_MANIFEST}).content == \
        server.manifest
    assert_preserved(server, before)


@pytest.mark.parametrize("headers", [
    {"X-Big": "a" * (MAX_HEADER_FIELD + 1)},                      # one line over the limit
    {f"X-Field-{i}": "v" for i in range(MAX_HEADER_FIELDS + 1)},  # one field too many
], ids=["long-line", "many-fields"])
def test_an_oversized_request_head_is_431_and_the_server_goes_on(server, headers):
    r = requests.get(f"{server.url}/v2/", headers=headers, timeout=20)
    assert r.status_code == 431
    # The largest head that is allowed still works: a line at the limit (which counts its CRLF),
    # among nearly the most fields (requests adds five of its own).
    fields = {f"X-Field-{i}": "v" for i in range(MAX_HEADER_FIELDS - 10)}
    fields["X-Big"] = "a" * (MAX_HEADER_FIELD - len("X-Big: \r\n"))
    assert requests.get(f"{server.url}/v2/", headers=fields, timeout=20).status_code == 200


def test_an_oversized_request_line_is_414(server):
    assert requests.get(f"{server.url}/v2/{'a' * 8190}/tags/list", timeout=20).status_code == 414
    assert requests.get(f"{server.url}/v2/", timeout=20).status_code == 200


# -- numbers and methods a client invents


@pytest.mark.parametrize("n", ["²", "٣", "9" * 5000, " 5", "-1", "0x10"],
                         ids=["superscript", "arabic-indic", "5000-digits", "blank", "negative", "hex"])
@pytest.mark.parametrize("path", ["/v2/_catalog", f"/v2/{NS}/tags/list", f"/v2/{NS}/referrers/"
                                  "sha256:" + "0" * 64, "/_ext/_changes"])
def test_a_count_that_is_not_ascii_digits_is_a_clear_400(server, n, path):
    # str.isdigit() takes "²" and int() then fails; int() takes other scripts' digits and refuses
    # more than 4300 of them: each of these was a 500 (or, for "٣", read as 3).
    r = requests.get(f"{server.url}{path}", params={"n": n}, timeout=30)
    assert r.status_code == 400, (r.status_code, r.text[:300])
    assert "n must be" in r.text


def test_a_content_range_with_thousands_of_digits_is_416_and_the_upload_goes_on(server):
    location = start_upload(server, NS)
    r = requests.patch(location, data=b"abc", timeout=30,
                       headers={"Content-Range": f"0-{'9' * 5000}", "Content-Type": "application/octet-stream"})
    assert r.status_code == 416, (r.status_code, r.text[:300])
    r = requests.patch(location, data=b"abc", timeout=30,
                       headers={"Content-Range": "0-2", "Content-Type": "application/octet-stream"})
    assert r.status_code == 202 and r.headers["Range"] == "0-2"


def test_a_range_with_thousands_of_digits_is_ignored_and_the_blob_served_whole(server):
    config = b'{"os":"linux"}'
    r = requests.get(server.v2(f"{NS}/blobs/{digest_of(config)}"), headers={"Range": f"bytes={'9' * 5000}-"},
                     timeout=30)
    assert (r.status_code, r.content) == (200, config)


def _method_counts(server) -> dict[str, float]:
    counts: dict[str, float] = {}
    for line in requests.get(f"{server.url}/metrics", timeout=30).text.splitlines():
        if line.startswith("http_requests_total{"):
            method = re.search(r'method="([^"]*)"', line).group(1)
            counts[method] = counts.get(method, 0.0) + float(line.rsplit(" ", 1)[1])
    return counts


def test_invented_http_methods_make_no_metric_series_of_their_own(server):
    before = _method_counts(server)
    invented = [f"XQ{a}{b}" for a in "ABCDE" for b in "ABCD"]
    for method in invented:
        assert requests.request(method, f"{server.url}/v2/", timeout=30).status_code in (404, 405)
    after = _method_counts(server)
    assert not set(invented) & set(after), sorted(set(after) - set(before))
    assert after.get("other", 0) - before.get("other", 0) == len(invented)
    assert set(after) <= {"GET", "HEAD", "PUT", "POST", "PATCH", "DELETE", "OPTIONS", "other"}
