"""Build OCI image layouts on disk for real clients (skopeo) to copy.

Contract:
- ``single_platform_image(dir, tag)`` writes a valid OCI image layout
  (``oci-layout``, ``index.json``, ``blobs/sha256/...``) holding one image
  manifest with a few layers of random content (real gzip'ed tar archives, so
  the config's ``rootfs.diff_ids`` are truthful) and returns a
  :class:`BuiltImage` with the manifest digest.
- ``multi_arch_index(dir, tag)`` writes an OCI image index pointing at two
  platform images (linux/amd64 and linux/arm64) and returns the index digest
  plus the child manifest digests.
- Every call produces fresh random content, so tests never collide on
  digests already stored by another test.

``index.json`` names the top-level manifest with the
``org.opencontainers.image.ref.name`` annotation, which is what skopeo's
``oci:<dir>:<tag>`` transport looks up.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
REF_NAME = "org.opencontainers.image.ref.name"


@dataclass
class BuiltImage:
    """What a layout holds: the top-level digest and every blob/manifest below it."""
    layout: Path
    tag: str
    digest: str                      # the manifest (or index) that index.json tags
    media_type: str
    manifests: list[str] = field(default_factory=list)  # child manifest digests (index only)
    blobs: list[str] = field(default_factory=list)      # configs and layers

    @property
    def oci_ref(self) -> str:
        return f"oci:{self.layout}:{self.tag}"


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class _Layout:
    def __init__(self, root: Path):
        self.root = Path(root)
        (self.root / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
        (self.root / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))

    def add(self, data: bytes, media_type: str, **extra) -> dict:
        digest = sha256_digest(data)
        (self.root / "blobs" / "sha256" / digest.split(":", 1)[1]).write_bytes(data)
        return {"mediaType": media_type, "digest": digest, "size": len(data), **extra}

    def add_json(self, doc: dict, media_type: str, **extra) -> dict:
        return self.add(json.dumps(doc, separators=(",", ":")).encode(), media_type, **extra)

    def tag(self, descriptor: dict, tag: str) -> None:
        index_path = self.root / "index.json"
        index = (json.loads(index_path.read_text()) if index_path.exists()
                 else {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []})
        index["manifests"] = [m for m in index["manifests"] if m.get("annotations", {}).get(REF_NAME) != tag]
        index["manifests"].append({**descriptor, "annotations": {REF_NAME: tag}})
        index_path.write_text(json.dumps(index))


def _layer(size: int) -> tuple[bytes, str]:
    """A gzip'ed tar with one file of random bytes; returns (blob, diff_id)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        payload = os.urandom(size)
        info = tarfile.TarInfo(f"data-{payload[:6].hex()}.bin")
        info.size = size
        info.mtime = 0
        tar.addfile(info, io.BytesIO(payload))
    tar_bytes = raw.getvalue()
    return gzip.compress(tar_bytes, mtime=0), sha256_digest(tar_bytes)


def _platform_image(layout: _Layout, arch: str, layer_sizes: tuple[int, ...]) -> tuple[dict, list[str]]:
    layers, diff_ids, blobs = [], [], []
    for size in layer_sizes:
        blob, diff_id = _layer(size)
        desc = layout.add(blob, OCI_LAYER_GZIP)
        layers.append(desc)
        diff_ids.append(diff_id)
        blobs.append(desc["digest"])
    config = {
        "architecture": arch,
        "os": "linux",
        "config": {"Env": [f"NONCE={os.urandom(8).hex()}"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created_by": f"tests.images layer {i}"} for i in range(len(layers))],
    }
    config_desc = layout.add_json(config, OCI_CONFIG)
    blobs.insert(0, config_desc["digest"])
    manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config_desc, "layers": layers}
    return layout.add_json(manifest, OCI_MANIFEST), blobs


def single_platform_image(root: Path, tag: str = "latest",
                          layer_sizes: tuple[int, ...] = (64 * 1024, 200 * 1024, 3 * 1024)) -> BuiltImage:
    layout = _Layout(root)
    desc, blobs = _platform_image(layout, "amd64", layer_sizes)
    layout.tag(desc, tag)
    return BuiltImage(Path(root), tag, desc["digest"], OCI_MANIFEST, blobs=blobs)


def multi_arch_index(root: Path, tag: str = "latest",
                     layer_sizes: tuple[int, ...] = (32 * 1024, 96 * 1024)) -> BuiltImage:
    layout = _Layout(root)
    children, blobs = [], []
    for arch in ("amd64", "arm64"):
        desc, child_blobs = _platform_image(layout, arch, layer_sizes)
        children.append({**desc, "platform": {"architecture": arch, "os": "linux"}})
        blobs.extend(child_blobs)
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": children}
    desc = layout.add_json(index, OCI_INDEX)
    layout.tag(desc, tag)
    return BuiltImage(Path(root), tag, desc["digest"], OCI_INDEX,
                      manifests=[c["digest"] for c in children], blobs=blobs)


def layout_digest(root: Path, tag: str) -> str:
    """The digest ``index.json`` of an OCI layout names for ``tag``."""
    index = json.loads((Path(root) / "index.json").read_text())
    for m in index["manifests"]:
        if m.get("annotations", {}).get(REF_NAME) == tag:
            return m["digest"]
    raise KeyError(f"{tag} not in {root}/index.json")
