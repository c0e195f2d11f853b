"""Build images, indexes and referrers directly in a local Registry (no HTTP),
as the source side of replication tests."""

from __future__ import annotations

import hashlib
import json
import os

from angos.oci import media_types as mt
from angos.oci.digest import Digest
from angos.registry.manifests import WritePolicy


def put_blob(reg, ns: str, data: bytes) -> dict:
    d = Digest.of(data)
    reg.uploads.monolithic(ns, d, [data], len(data))
    return {"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": str(d), "size": len(data)}


def image(reg, ns: str, tag: str | None, layers: int = 2, size: int = 2048, subject: dict | None = None,
          artifact_type: str | None = None, seed: bytes | None = None) -> tuple[str, bytes]:
    """Push a small random image; returns (digest, manifest bytes)."""
    seed = seed or os.urandom(8)
    config = json.dumps({"architecture": "amd64", "os": "linux", "seed": seed.hex()}).encode()
    cfg = put_blob(reg, ns, config)
    cfg["mediaType"] = "application/vnd.oci.image.config.v1+json"
    descs = [put_blob(reg, ns, hashlib.sha256(seed + bytes([i])).digest() * (size // 32)) for i in range(layers)]
    doc = {"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST, "config": cfg, "layers": descs}
    if subject:
        doc["subject"] = subject
    if artifact_type:
        doc["artifactType"] = artifact_type
    body = json.dumps(doc).encode()
    d = Digest.of(body)
    reg.manifests.put(ns, tag or str(d), body, mt.OCI_MANIFEST, WritePolicy())
    return str(d), body


def index(reg, ns: str, tag: str, children: list[tuple[str, bytes]]) -> tuple[str, bytes]:
    doc = {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": [
        {"mediaType": mt.OCI_MANIFEST, "digest": d, "size": len(b),
         "platform": {"architecture": arch, "os": "linux"}}
        for (d, b), arch in zip(children, ["amd64", "arm64", "s390x", "ppc64le"])]}
    body = json.dumps(doc).encode()
    reg.manifests.put(ns, tag, body, mt.OCI_INDEX, WritePolicy())
    return str(Digest.of(body)), body
