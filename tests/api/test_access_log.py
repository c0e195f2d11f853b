"""The access line: one ``angos.access`` record per request, in text and in JSON (angos.server_log).

A deny-by-default server with one basic-auth identity serves a push (blob and
manifest), a pull (manifest and blob: the blob goes out with ``sendfile``, so
``bytes_out`` must be the bytes really sent), an anonymous request answered
401, a chunked upload (no ``Content-Length``: ``bytes_in`` is counted) and a
request that fails with a 500; the test reads the server's own log. The request
id is the caller's when sane, a fresh one otherwise, echoed in ``X-Request-Id``,
and the 500's traceback carries the same id as its access line.
"""

from __future__ import annotations

import json
import re

import argon2
import pytest
import requests

from tests.api.helpers import OCI_CONFIG, OCI_LAYER, OCI_MANIFEST, descriptor, digest_of, image_manifest, random_bytes
from tests.conftest import wait_for

USER = ("alice", "s3cret")
AGENT = 'access-log-test/1.0 (a "quoted" agent)'

FIELDS = ["request_id", "client_ip", "identity", "method", "path", "action", "status", "bytes_in", "bytes_out",
          "duration_secs", "user_agent"]


def config(fmt: str, access_log: bool = True) -> str:
    """Deny by default; alice may do anything. The argon2 parameters are cheap: a test identity."""
    hashed = argon2.PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1).hash(USER[1])
    return f"""
[server]
bind_address = "127.0.0.1"
port = @PORT@
workers = 2
access_log = {str(access_log).lower()}

[global]
log_format = "{fmt}"

[global.access_policy]
default = "deny"
rules = ["identity.username == 'alice'"]

[auth.identity.alice]
username = "alice"
password = "{hashed}"

[blob_store.fs]
root_dir = "@DATA@"
"""


def start(angos_factory, fmt: str, access_log: bool = True):
    return angos_factory(config_text=config(fmt, access_log))


_LOGFMT = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|\S+)')


def access_lines(server, fmt: str) -> list[dict]:
    """Every access record in the server's log, as a dict of its fields (numbers as numbers)."""
    out = []
    for line in server.logs().splitlines():
        if fmt == "json":
            if not line.startswith("{"):
                continue
            doc = json.loads(line)
            if doc["logger"] == "angos.access":
                out.append({k: doc[k] for k in FIELDS})
        elif " angos.access: " in line:
            pairs = _LOGFMT.findall(line.split(" angos.access: ", 1)[1])
            doc = {k: json.loads(v) if v.startswith('"') else v for k, v in pairs}
            for k in ("status", "bytes_in", "bytes_out"):
                doc[k] = int(doc[k])
            doc["duration_secs"] = float(doc["duration_secs"])
            assert list(doc) == FIELDS, line
            out.append(doc)
    return out


def line_for(server, fmt: str, request_id: str) -> dict:
    found = []

    def logged():
        found[:] = [d for d in access_lines(server, fmt) if d["request_id"] == request_id]
        return bool(found)

    wait_for(logged, timeout=20, what=f"the access line of request {request_id}")
    assert len(found) == 1, found
    return found[0]


def call(method: str, url: str, **kwargs) -> requests.Response:
    headers = {"User-Agent": AGENT, **kwargs.pop("headers", {})}
    r = requests.request(method, url, headers=headers, timeout=30, **kwargs)
    assert re.fullmatch(r"[0-9a-f]{32}|[A-Za-z0-9._:/+=@-]+", r.headers.get("X-Request-Id", "")), r.headers
    return r


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_push_pull_and_401_each_log_one_access_line(angos_factory, fmt):
    server = start(angos_factory, fmt)
    ns = "logs/app"
    layer = random_bytes(300_000)  # big enough for the sendfile path
    config = b'{"architecture":"amd64","os":"linux"}'
    for blob in (layer, config):
        r = call("POST", server.v2(f"{ns}/blobs/uploads/?digest={digest_of(blob)}"), data=blob, auth=USER)
        assert r.status_code == 201, r.text
    blob_push = r  # the config's upload
    manifest = image_manifest(descriptor(OCI_CONFIG, config), [descriptor(OCI_LAYER, layer)])
    push = call("PUT", server.v2(f"{ns}/manifests/v1"), data=manifest, auth=USER,
                headers={"Content-Type": OCI_MANIFEST, "X-Request-Id": "ci-run-42.step:7"})
    assert push.status_code == 201, push.text
    assert push.headers["X-Request-Id"] == "ci-run-42.step:7"  # a sane caller id is kept and echoed
    pull = call("GET", server.v2(f"{ns}/blobs/{digest_of(layer)}"), auth=USER)
    assert pull.status_code == 200 and pull.content == layer
    refused = call("GET", server.v2(f"{ns}/manifests/v1"), headers={"Accept": OCI_MANIFEST})
    assert refused.status_code == 401

    logged = line_for(server, fmt, "ci-run-42.step:7")
    assert {k: logged[k] for k in FIELDS if k not in ("request_id", "duration_secs")} == {
        "client_ip": "127.0.0.1", "identity": "alice", "method": "PUT", "path": f"/v2/{ns}/manifests/v1",
        "action": "put-manifest", "status": 201, "bytes_in": len(manifest), "bytes_out": 0, "user_agent": AGENT}
    assert logged["duration_secs"] >= 0

    upload = line_for(server, fmt, blob_push.headers["X-Request-Id"])
    assert (upload["method"], upload["action"], upload["status"], upload["bytes_in"]) == (
        "POST", "start-upload", 201, len(config))
    assert upload["path"] == f"/v2/{ns}/blobs/uploads/?digest={digest_of(config)}"  # the query is part of it

    sent = line_for(server, fmt, pull.headers["X-Request-Id"])
    assert (sent["action"], sent["status"], sent["identity"], sent["bytes_out"]) == (
        "get-blob", 200, "alice", len(layer))

    anonymous = line_for(server, fmt, refused.headers["X-Request-Id"])
    assert (anonymous["action"], anonymous["status"], anonymous["identity"], anonymous["method"]) == (
        "get-manifest", 401, "-", "GET")


@pytest.mark.parametrize("sent", ["has spaces", "x" * 129, "new\\nline", ""], ids=["spaces", "too-long",
                                                                                  "escape", "empty"])
def test_an_insane_request_id_is_replaced_by_a_fresh_one(angos, sent):
    r = requests.get(angos.url + "/v2/", headers={"X-Request-Id": sent}, timeout=30)
    assert r.status_code == 200
    assert re.fullmatch(r"[0-9a-f]{32}", r.headers["X-Request-Id"]), r.headers["X-Request-Id"]


def test_each_request_gets_its_own_id(angos):
    ids = {requests.get(angos.url + "/v2/", timeout=30).headers["X-Request-Id"] for _ in range(5)}
    assert len(ids) == 5


def test_chunked_upload_logs_the_bytes_received(angos_factory):
    server = start(angos_factory, "json")
    ns = "logs/chunked"
    start_upload = call("POST", server.v2(f"{ns}/blobs/uploads/"), auth=USER)
    assert start_upload.status_code == 202, start_upload.text
    body = random_bytes(200_000)
    location = start_upload.headers["Location"]
    url = location if location.startswith("http") else server.url + location
    patch = call("PATCH", url, data=iter([body[:70_000], body[70_000:]]), auth=USER,
                 headers={"Content-Type": "application/octet-stream"})  # a generator body goes chunked
    assert patch.status_code == 202, patch.text
    logged = line_for(server, "json", patch.headers["X-Request-Id"])
    assert (logged["action"], logged["bytes_in"]) == ("update-upload", len(body))


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_a_500_logs_its_traceback_with_the_request_id_of_its_access_line(angos_factory, fmt):
    server = start(angos_factory, fmt)
    ns = "logs/broken"
    blob = random_bytes(4096)
    r = call("POST", server.v2(f"{ns}/blobs/uploads/?digest={digest_of(blob)}"), data=blob, auth=USER)
    assert r.status_code == 201, r.text
    # The blob's bytes on disk become a symbolic link to itself: reading them fails (ELOOP) in a way
    # nothing expects.
    stored = [p for p in (server.workdir / "data").rglob("*") if p.is_file() and p.read_bytes() == blob]
    assert len(stored) == 1, stored
    stored[0].unlink()
    stored[0].symlink_to(stored[0].name)
    broken = call("GET", server.v2(f"{ns}/blobs/{digest_of(blob)}"), auth=USER, headers={"X-Request-Id": "boom-1"})
    assert broken.status_code == 500, broken.text
    assert line_for(server, fmt, "boom-1")["status"] == 500
    log = server.logs()
    if fmt == "json":
        errors = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
        errors = [d for d in errors if d["level"] == "ERROR"]
        assert errors and all(d.get("request_id") == "boom-1" for d in errors), errors
        assert any("Too many levels of symbolic links" in d.get("exc", "") for d in errors), errors
    else:
        lines = log.splitlines()
        at = [i for i, line in enumerate(lines) if " ERROR " in line]
        assert at, log
        assert all("request_id=boom-1 " in lines[i] for i in at), [lines[i] for i in at]
        assert any(lines[i + 1].startswith("Traceback") for i in at if i + 1 < len(lines)), log


def test_access_log_off_writes_no_access_lines(angos_factory):
    server = start(angos_factory, "text", access_log=False)
    r = call("GET", server.v2(""), auth=USER)
    assert r.status_code == 200 and r.headers["X-Request-Id"]  # ids are still given out
    assert server.stop() == 0  # every line the request could have caused is written by now
    assert "configuration loaded" in server.logs()
    assert access_lines(server, "text") == []
