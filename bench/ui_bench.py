"""Web UI page times (``python -m bench --only ui``; ``--quick`` for a smoke run).

One Angos (filesystem store, ``[ui] enabled``, 2 workers) holding ``bench/big`` with
``--tags`` tags (10,000 by default) spread over ``--images`` distinct images (100: the first
page's 100 tags then name 100 different manifests, each with its own config blob to read for its
platform, the worst case for that page), plus ``bench/small`` with 100 tags of one image.
The images are pushed over HTTP; the tags are written with the registry's own tag store
(``ManifestService.tags.put``), in process, which takes seconds instead of 10,000 PUTs.

Reported, each the median and p95 of ``--repeat`` GETs after 3 warm-up ones, timed by the
client on loopback (so server time plus well under a millisecond):

- the big namespace's first page (the issue's bar: under 200 ms), a page from its middle
  (``last=``), and a filtered page (``q=``);
- the small namespace's first page in the same registry (what a page costs is not what the
  registry holds), and the home page;
- one manifest page.

Everything listens on 127.0.0.1 and is removed on exit or Ctrl-C.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import sys
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.replication_bench import Procs  # noqa: E402 - after sys.path
from bench.servers import free_port, wait_url  # noqa: E402

OCI = "application/vnd.oci.image.manifest.v1+json"


def _blob(s: requests.Session, url: str, ns: str, data: bytes, media_type: str) -> dict:
    d = "sha256:" + hashlib.sha256(data).hexdigest()
    r = s.post(f"{url}/v2/{ns}/blobs/uploads/?digest={d}", data=data, timeout=30)
    r.raise_for_status()
    return {"mediaType": media_type, "digest": d, "size": len(data)}


def push_image(s: requests.Session, url: str, ns: str, i: int) -> str:
    cfg = _blob(s, url, ns, json.dumps({"os": "linux", "architecture": "amd64", "n": i,
                                        "config": {"Env": ["PATH=/bin"], "Labels": {"n": str(i)}}}).encode(),
                "application/vnd.oci.image.config.v1+json")
    layer = _blob(s, url, ns, f"layer {i} ".encode() * 64, "application/vnd.oci.image.layer.v1.tar")
    body = json.dumps({"schemaVersion": 2, "mediaType": OCI, "config": cfg, "layers": [layer]}).encode()
    d = "sha256:" + hashlib.sha256(body).hexdigest()
    r = s.put(f"{url}/v2/{ns}/manifests/{d}", data=body, headers={"Content-Type": OCI}, timeout=30)
    r.raise_for_status()
    return d


def write_tags(cfg_path: Path, ns: str, digests: list[str], count: int) -> None:
    """``count`` tags ``t00000``… of ``ns``, tag ``i`` naming ``digests[i % len(digests)]``."""
    from angos.config import load_config
    from angos.registry import build_registry
    from angos.registry.timestamps import now

    reg = build_registry(load_config([str(cfg_path)]))
    for i in range(count):
        reg.manifests.tags.put(ns, f"t{i:05d}", digests[i % len(digests)], now())


def timed(s: requests.Session, url: str, repeat: int, expect: str | None = None) -> dict:
    for _ in range(3):
        s.get(url, timeout=60).raise_for_status()
    samples = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        r = s.get(url, timeout=60)
        samples.append((time.perf_counter() - t0) * 1000)
        r.raise_for_status()
        if expect is not None and expect not in r.text:
            raise RuntimeError(f"{url} lacks {expect!r}")
    samples.sort()
    return {"p50_ms": statistics.median(samples), "p95_ms": samples[min(len(samples) - 1, int(len(samples) * 0.95))],
            "bytes": len(r.content)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench --only ui")
    p.add_argument("--quick", action="store_true", help="1,000 tags, 20 images, 10 samples")
    p.add_argument("--tags", type=int, default=None)
    p.add_argument("--images", type=int, default=None)
    p.add_argument("--repeat", type=int, default=None)
    args = p.parse_args(argv or [])
    tags = args.tags or (1000 if args.quick else 10000)
    images = args.images or (20 if args.quick else 100)
    repeat = args.repeat or (10 if args.quick else 30)
    procs = Procs()
    try:
        port = free_port()
        cfg = procs.tmp / "ui.toml"
        cfg.write_text(f'[server]\nbind_address = "127.0.0.1"\nport = {port}\nworkers = 2\n\n'
                       f'[global]\nupdate_pull_time = true\n\n[blob_store.fs]\nroot_dir = "{procs.tmp / "data"}"\n\n'
                       f'[ui]\nenabled = true\n\n[repository."bench"]\n[repository."bench".access_policy]\n'
                       f'default = "allow"\n')
        proc = procs.spawn([sys.executable, "-m", "angos.cli", "-c", str(cfg), "server"], "ui.log")
        url = f"http://127.0.0.1:{port}"
        wait_url(url + "/healthz", proc)
        s = requests.Session()
        t0 = time.perf_counter()
        digests = [push_image(s, url, "bench/big", i) for i in range(images)]
        small = [push_image(s, url, "bench/small", 0)]
        write_tags(cfg, "bench/big", digests, tags)
        write_tags(cfg, "bench/small", small, 100)
        print(f"setup: {images} images and {tags} tags in bench/big, 100 tags in bench/small "
              f"({time.perf_counter() - t0:.1f} s)")
        ui = f"{url}/_ui"
        rows = [
            (f"bench/big ({tags} tags) first page", f"{ui}/namespaces/bench/big", 't00099"'),
            ("bench/big page from the middle", f"{ui}/namespaces/bench/big?last=t{tags // 2:05d}", None),
            ("bench/big filtered (q=9)", f"{ui}/namespaces/bench/big?q=9", None),
            ("bench/small (100 tags) first page", f"{ui}/namespaces/bench/small", 't00099"'),
            ("home page", f"{ui}/", 'data-namespace="bench/big"'),
            ("manifest page", f"{ui}/namespaces/bench/big/manifests/{digests[0]}", 'id="layers"'),
        ]
        width = max(len(label) for label, _, _ in rows)
        for label, page_url, expect in rows:
            res = timed(s, page_url, repeat, expect)
            print(f"{label:<{width}}  p50 {res['p50_ms']:7.1f} ms  p95 {res['p95_ms']:7.1f} ms  "
                  f"({res['bytes'] // 1024} KiB)", flush=True)
    finally:
        procs.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
