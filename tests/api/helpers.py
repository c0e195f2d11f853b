"""Small OCI client helpers shared by the protocol tests (tests/api, tests/test_hostile.py).

Everything goes over real HTTP with ``requests`` (or ``http.client`` when a
path must reach the server byte for byte, since ``requests`` normalises dot
segments). Builders return the exact manifest bytes pushed so tests can
compare digests and bodies.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import uuid
from urllib.parse import urljoin

import requests
from requests.structures import CaseInsensitiveDict

ALGS = ("sha256", "sha512")

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
OCI_NONDIST_LAYER = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"


def digest_of(data: bytes, alg: str = "sha256") -> str:
    return f"{alg}:{hashlib.new(alg, data).hexdigest()}"


def uniq(prefix: str = "t") -> str:
    """A namespace (or component) no other test uses on the shared server."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def random_bytes(n: int) -> bytes:
    # Distinct per call so blobs never collide across tests sharing a server.
    seed = uuid.uuid4().bytes
    out = bytearray()
    while len(out) < n:
        seed = hashlib.sha256(seed).digest()
        out += seed
    return bytes(out[:n])


def assert_error_shape(resp) -> list[str]:
    """The body is the OCI error JSON ``{"errors": [{code, message, detail?}]}``; returns the codes."""
    assert resp.headers.get("Content-Type", "").startswith("application/json"), resp.headers
    doc = resp.json()
    assert isinstance(doc.get("errors"), list) and doc["errors"], doc
    for err in doc["errors"]:
        assert isinstance(err.get("code"), str) and isinstance(err.get("message"), str), err
    return [e["code"] for e in doc["errors"]]


def assert_oci_error(resp: requests.Response, status: int, code: str) -> dict:
    """The response is ``status`` with the OCI error JSON naming ``code``."""
    assert resp.status_code == status, f"expected {status} {code}, got {resp.status_code}: {resp.text[:500]}"
    codes = assert_error_shape(resp)
    doc = resp.json()
    assert code in codes, f"expected {code} in {codes}"
    return doc


def absolute(server, location: str) -> str:
    return urljoin(server.url + "/", location)


def with_query(url: str, query: str) -> str:
    return url + ("&" if "?" in url else "?") + query


def push_blob(server, ns: str, data: bytes, alg: str = "sha256") -> str:
    d = digest_of(data, alg)
    r = requests.post(server.v2(f"{ns}/blobs/uploads/?digest={d}"), data=data)
    assert r.status_code == 201, r.text
    return d


def start_upload(server, ns: str, query: str = "") -> str:
    r = requests.post(server.v2(f"{ns}/blobs/uploads/") + (f"?{query}" if query else ""))
    assert r.status_code == 202, r.text
    assert r.headers["Location"]
    return absolute(server, r.headers["Location"])


def descriptor(media_type: str, data: bytes, alg: str = "sha256", **extra) -> dict:
    return {"mediaType": media_type, "digest": digest_of(data, alg), "size": len(data), **extra}


def image_manifest(config: dict, layers: list[dict], media_type: str = OCI_MANIFEST, subject: dict | None = None,
                   artifact_type: str | None = None, annotations: dict | None = None) -> bytes:
    doc = {"schemaVersion": 2, "mediaType": media_type, "config": config, "layers": layers}
    if artifact_type:
        doc["artifactType"] = artifact_type
    if subject:
        doc["subject"] = subject
    if annotations:
        doc["annotations"] = annotations
    return json.dumps(doc, indent=1).encode()


def index_manifest(manifests: list[dict], media_type: str = OCI_INDEX, subject: dict | None = None,
                   artifact_type: str | None = None, annotations: dict | None = None) -> bytes:
    doc = {"schemaVersion": 2, "mediaType": media_type, "manifests": manifests}
    if artifact_type:
        doc["artifactType"] = artifact_type
    if subject:
        doc["subject"] = subject
    if annotations:
        doc["annotations"] = annotations
    return json.dumps(doc, indent=1).encode()


def put_manifest(server, ns: str, reference: str, body: bytes, media_type: str, params=None) -> requests.Response:
    return requests.put(server.v2(f"{ns}/manifests/{reference}"), data=body,
                        headers={"Content-Type": media_type}, params=params)


def push_image(server, ns: str, alg: str = "sha256", tag: str | None = None, docker: bool = False,
               subject: dict | None = None, artifact_type: str | None = None, annotations: dict | None = None,
               config_media_type: str | None = None, layer_count: int = 1):
    """Push config + layers + an image manifest (by ``tag``, else by its ``alg`` digest).

    Returns ``(manifest digest, manifest bytes, media type, [blob digests])``.
    """
    config = json.dumps({"architecture": "amd64", "os": "linux", "nonce": uuid.uuid4().hex}).encode()
    layers = [random_bytes(64 + i) for i in range(layer_count)]
    blob_digests = [push_blob(server, ns, b, alg) for b in [config, *layers]]
    cfg_type = config_media_type or (DOCKER_CONFIG if docker else OCI_CONFIG)
    media_type = DOCKER_MANIFEST if docker else OCI_MANIFEST
    body = image_manifest(descriptor(cfg_type, config, alg),
                          [descriptor(DOCKER_LAYER if docker else OCI_LAYER, b, alg) for b in layers],
                          media_type, subject, artifact_type, annotations)
    ref = tag or digest_of(body, alg)
    r = put_manifest(server, ns, ref, body, media_type)
    assert r.status_code == 201, r.text
    return r.headers["Docker-Content-Digest"], body, media_type, blob_digests


def manifest_descriptor(body: bytes, media_type: str, alg: str = "sha256", **extra) -> dict:
    return descriptor(media_type, body, alg, **extra)


def raw_request(server, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
    """Send ``path`` exactly as given (no dot-segment or percent normalisation)."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        hdrs = dict(headers or {})
        if body is not None:
            hdrs.setdefault("Content-Length", str(len(body)))
        for k, v in hdrs.items():
            conn.putheader(k, v)
        conn.endheaders(body)
        resp = conn.getresponse()
        return RawResponse(resp.status, CaseInsensitiveDict(resp.getheaders()), resp.read())
    finally:
        conn.close()


class RawResponse:
    """The bits of ``requests.Response`` that :func:`assert_oci_error` reads."""

    def __init__(self, status: int, headers, content: bytes):
        self.status_code = status
        self.headers = headers
        self.content = content
        self.text = content.decode(errors="replace")

    def json(self):
        return json.loads(self.content)
