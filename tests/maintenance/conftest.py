"""Helpers for scrub tests: run ``angos scrub`` as a subprocess against a server's
config, push small images over HTTP, and locate objects in a server's data directory."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import requests

from angos.oci.digest import Digest
from angos.registry import paths

from ..conftest import ROOT

OCI = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER = "application/vnd.oci.image.layer.v1.tar"


def scrub(server, *args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "angos.cli", "-c", str(server.config_path), "scrub", *args],
                          cwd=server.workdir, capture_output=True, text=True, timeout=timeout,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", **(env or {})})


def lines(out: str, verb: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith(verb + " ")]


def data_path(server, key: str) -> Path:
    """The file of a storage key (blob and metadata stores share the data root in these configs)."""
    return Path(server.workdir) / "data" / key


def put_blob(server, ns: str, data: bytes) -> dict:
    d = "sha256:" + hashlib.sha256(data).hexdigest()
    r = requests.post(server.v2(f"{ns}/blobs/uploads/?digest={d}"), data=data)
    assert r.status_code == 201, r.text
    return {"mediaType": LAYER, "digest": d, "size": len(data)}


def manifest_body(server, ns: str, seed: str, layers: int = 1,
                  subject: dict | None = None) -> tuple[bytes, str, list[str]]:
    """Upload a config and ``layers`` layers derived from ``seed``; return (manifest body, its digest, blob digests)."""
    cfg = put_blob(server, ns, json.dumps({"seed": seed}).encode())
    cfg["mediaType"] = CONFIG
    descs = [put_blob(server, ns, f"layer {i} of {seed}".encode() * 64) for i in range(layers)]
    doc = {"schemaVersion": 2, "mediaType": OCI, "config": cfg, "layers": descs}
    if subject:
        doc["subject"] = subject
    body = json.dumps(doc).encode()
    return body, "sha256:" + hashlib.sha256(body).hexdigest(), [cfg["digest"]] + [x["digest"] for x in descs]


def push(server, ns: str, ref: str, seed: str, layers: int = 1, headers: dict | None = None,
         subject: dict | None = None, expect: int = 201) -> tuple[str, list[str]]:
    body, d, blobs = manifest_body(server, ns, seed, layers, subject)
    r = requests.put(server.v2(f"{ns}/manifests/{ref}"), data=body, headers={"Content-Type": OCI, **(headers or {})})
    assert r.status_code == expect, r.text
    return d, blobs


def pullable(server, ns: str, ref: str) -> bool:
    """The manifest and every blob it names can be fetched, and each blob matches its digest."""
    r = requests.get(server.v2(f"{ns}/manifests/{ref}"), headers={"Accept": f"{OCI}, {OCI_INDEX}"})
    if r.status_code != 200:
        return False
    doc = r.json()
    for desc in [doc["config"], *doc["layers"]]:
        b = requests.get(server.v2(f"{ns}/blobs/{desc['digest']}"))
        if b.status_code != 200 or "sha256:" + hashlib.sha256(b.content).hexdigest() != desc["digest"]:
            return False
    return True


def blob_status(server, ns: str, d: str) -> int:
    return requests.head(server.v2(f"{ns}/blobs/{d}")).status_code


def blob_file(server, d: str) -> Path:
    return data_path(server, paths.blob_data(Digest.parse(d)))


def backdate(path: Path, secs: float) -> None:
    st = path.stat()
    os.utime(path, (st.st_atime - secs, st.st_mtime - secs))
