"""Test data: one large random file with cheap digest variants, and OCI layouts for skopeo.

:class:`BlobFile` writes ``size`` random bytes once. ``variant(i, length)``
stamps ``i`` into the first 8 bytes and returns the sha256 of the first
``length`` bytes, so each repetition of an upload sends content neither
server has seen (a fresh blob, not a de-duplicated one) without writing
another gigabyte. Both servers get the same variant in the same repetition.

:func:`build_oci_layout` writes an OCI image layout (``oci-layout``,
``index.json``, ``blobs/sha256``) with ``layers`` gzip'ed tar layers of random
content. The layers are already compressed, so skopeo pushes them as they are
instead of compressing them itself.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import random
import struct
import tarfile
from pathlib import Path

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"


class BlobFile:
    def __init__(self, path: Path, size: int):
        self.path = Path(path)
        self.size = size
        with open(self.path, "wb") as fh:
            block = 1 << 24
            left = size
            while left:
                n = min(block, left)
                fh.write(os.urandom(n))
                left -= n
        self.fh = open(self.path, "r+b")
        self.current: tuple[int, int] | None = None

    def variant(self, i: int, length: int | None = None) -> str:
        """Make the file's content variant ``i``; return the digest of its first ``length`` bytes."""
        length = self.size if length is None else length
        os.pwrite(self.fh.fileno(), struct.pack(">Q", i), 0)
        h = hashlib.sha256()
        buf = memoryview(bytearray(1 << 20))
        offset = 0
        while offset < length:
            n = os.preadv(self.fh.fileno(), [buf[:min(len(buf), length - offset)]], offset)
            if n <= 0:
                raise IOError(f"short read of {self.path} at {offset}")
            h.update(buf[:n])
            offset += n
        self.current = (i, length)
        return f"sha256:{h.hexdigest()}"

    def close(self) -> None:
        self.fh.close()


def recycle_memory(directory: Path, size: int) -> None:
    """Write and delete ``size`` bytes of scratch file, leaving that much freshly freed memory.

    On a VM that backs guest memory lazily and takes freed pages back (virtio
    free page reporting, after ~2 s), page-cache writes into memory the guest
    has not used recently run at 0.3-0.8 GiB/s, into just-freed memory at ~4 GiB/s.
    Calling this right before a timed upload makes it write into recycled
    memory, like a long-running server whose page cache is already full.
    """
    path = Path(directory) / "recycle.tmp"
    block = b"\0" * (1 << 20)
    try:
        with open(path, "wb") as fh:
            for _ in range(size >> 20):
                fh.write(block)
    finally:
        path.unlink(missing_ok=True)


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def make_manifest(layers: list[tuple[str, int]], config: bytes) -> bytes:
    body = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": _sha256(config), "size": len(config)},
        "layers": [{"mediaType": OCI_LAYER_GZIP, "digest": d, "size": s} for d, s in layers],
    }
    return json.dumps(body, indent=2).encode()


def make_config(diff_ids: list[str]) -> bytes:
    return json.dumps({"architecture": "amd64", "os": "linux", "config": {},
                       "rootfs": {"type": "layers", "diff_ids": diff_ids}}).encode()


def random_layer(rng: random.Random, size: int, index: int) -> tuple[bytes, str]:
    """A gzip'ed tar with one file of ``size`` random bytes; returns (blob, diff_id)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo(f"layer{index:02d}/data.bin")
        info.size = size
        info.mtime = 0
        tar.addfile(info, io.BytesIO(rng.randbytes(size)))
    tar_bytes = raw.getvalue()
    return gzip.compress(tar_bytes, compresslevel=1, mtime=0), _sha256(tar_bytes)


def build_oci_layout(root: Path, layers: int, min_size: int, max_size: int, seed: int,
                     tag: str = "latest") -> dict:
    """Write an OCI layout; returns {"manifest_digest", "bytes", "layers"}."""
    rng = random.Random(seed)
    blobs_dir = root / "blobs" / "sha256"
    blobs_dir.mkdir(parents=True)

    def store(data: bytes) -> str:
        d = _sha256(data)
        (blobs_dir / d.split(":", 1)[1]).write_bytes(data)
        return d

    descs, diff_ids, total = [], [], 0
    for i in range(layers):
        blob, diff_id = random_layer(rng, rng.randint(min_size, max_size), i)
        descs.append((store(blob), len(blob)))
        diff_ids.append(diff_id)
        total += len(blob)
    config = make_config(diff_ids)
    store(config)
    manifest = make_manifest(descs, config)
    mdigest = store(manifest)
    (root / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
             "manifests": [{"mediaType": OCI_MANIFEST, "digest": mdigest, "size": len(manifest),
                            "annotations": {"org.opencontainers.image.ref.name": tag}}]}
    (root / "index.json").write_text(json.dumps(index))
    return {"manifest_digest": mdigest, "bytes": total + len(config) + len(manifest), "layers": layers}


def layout_manifest_digest(root: Path) -> str:
    index = json.loads((root / "index.json").read_text())
    return index["manifests"][0]["digest"]
