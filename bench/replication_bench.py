"""Replication benchmarks (``python -m bench --only replication``).

1. Latency: A replicates to B (SQLite queue, in-process drain). For each of N
   sequential pushes, the time from A's answer to the manifest PUT until the
   tag resolves on B (HEAD polled every 2 ms). Prints p50/p99.
2. Throughput: N images × 3 layers × 1 MiB. Angos: the images are loaded into
   A with a separate-worker queue and no worker running, then one
   ``angos worker`` is started and timed until every tag resolves on B. The
   same images are loaded into one docker-registry and ``skopeo sync`` copies
   them to a second one, timed the same way. Prints both and the ratio.
3. Bytes sent once: B's count of completed uploads equals the distinct blobs.
4. Beside a hung downstream: the latency of (1) while A also replicates to a
   server that accepts connections and never answers (goal: within 2× of 1).
5. Outage: B is stopped, N tags are pushed to A, B starts again after
   ``--outage`` seconds; the time from B's return until every tag resolves
   on B, with no reconcile (goal: under 15 s for 300 tags after 2 minutes).

Everything listens on 127.0.0.1 and is cleaned up on exit or Ctrl-C.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

from bench.servers import free_port, wait_url

ROOT = Path(__file__).resolve().parent.parent
OCI = "application/vnd.oci.image.manifest.v1+json"


class Procs:
    def __init__(self):
        self.procs: list[subprocess.Popen] = []
        self.tmp = Path(tempfile.mkdtemp(prefix="angos-repl-bench-"))

    def spawn(self, args, log: str, env=None) -> subprocess.Popen:
        p = subprocess.Popen(args, stdout=open(self.tmp / log, "ab"), stderr=subprocess.STDOUT,
                             start_new_session=True, env=dict(os.environ, **(env or {})), cwd=self.tmp)
        self.procs.append(p)
        return p

    def angos(self, name: str, downstream: str | None, worker_queue: bool = False, also: str | None = None,
              port: int | None = None):
        port = port or free_port()
        text = textwrap.dedent(f"""\
            [server]
            bind_address = "127.0.0.1"
            port = {port}
            workers = 2
            [blob_store.fs]
            root_dir = "{self.tmp / name}"
            [repository."bench"]
            [repository."bench".access_policy]
            default = "allow"
            """)
        if worker_queue:
            text += "[global.job_queue]\nmax_attempts = 50\nretry_backoff_max_ms = 500\n"
        if also:  # a second downstream listed first, so it is never favoured by order
            text += f'[[repository."bench".downstream]]\nname = "other"\nurl = "{also}"\n'
        if downstream:
            text += f'[[repository."bench".downstream]]\nname = "peer"\nurl = "{downstream}"\n'
        cfg = self.tmp / f"{name}.toml"
        cfg.write_text(text)
        p = self.spawn([sys.executable, "-m", "angos.cli", "-c", str(cfg), "server"], f"{name}.log")
        url = f"http://127.0.0.1:{port}"
        wait_url(url + "/healthz", p)
        return url, cfg

    def distribution(self, name: str) -> str:
        port = free_port()
        cfg = self.tmp / f"{name}.yml"
        cfg.write_text(textwrap.dedent(f"""\
            version: 0.1
            log: {{level: error}}
            storage:
              filesystem: {{rootdirectory: {self.tmp / name}}}
              delete: {{enabled: true}}
            http: {{addr: 127.0.0.1:{port}}}
            """))
        p = self.spawn(["docker-registry", "serve", str(cfg)], f"{name}.log")
        url = f"http://127.0.0.1:{port}"
        wait_url(url + "/v2/", p)
        return url

    def close(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGTERM)
                    p.wait(15)
                except (subprocess.TimeoutExpired, ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
        shutil.rmtree(self.tmp, ignore_errors=True)


def push_blob(session, url: str, ns: str, data: bytes) -> dict:
    d = "sha256:" + hashlib.sha256(data).hexdigest()
    r = session.post(f"{url}/v2/{ns}/blobs/uploads/", headers={"Content-Length": "0"})
    r.raise_for_status()
    loc = r.headers["Location"]
    loc = loc if loc.startswith("http") else url + loc
    r = session.put(f"{loc}{'&' if '?' in loc else '?'}digest={d}", data=data,
                    headers={"Content-Type": "application/octet-stream"})
    r.raise_for_status()
    # Declared gzip so skopeo copies layers verbatim instead of compressing them on the way.
    return {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": d, "size": len(data)}


def push_image(session, url: str, ns: str, tag: str, layers: list[bytes]) -> str:
    cfg = json.dumps({"tag": tag}).encode()
    c = push_blob(session, url, ns, cfg)
    c["mediaType"] = "application/vnd.oci.image.config.v1+json"
    body = json.dumps({"schemaVersion": 2, "mediaType": OCI, "config": c,
                       "layers": [push_blob(session, url, ns, layer) for layer in layers]}).encode()
    r = session.put(f"{url}/v2/{ns}/manifests/{tag}", data=body, headers={"Content-Type": OCI})
    r.raise_for_status()
    return "sha256:" + hashlib.sha256(body).hexdigest()


def resolves(session, url: str, ns: str, tag: str, digest: str) -> bool:
    r = session.head(f"{url}/v2/{ns}/manifests/{tag}", headers={"Accept": OCI})
    return r.status_code == 200 and r.headers.get("Docker-Content-Digest") == digest


def latency(procs: Procs, n: int, hung: str | None = None) -> dict:
    name = "hung" if hung else "lat"
    b, _ = procs.angos(f"{name}-b", None)
    a, _ = procs.angos(f"{name}-a", b, also=hung)
    sa, sb = requests.Session(), requests.Session()
    samples = []
    for i in range(n):
        layer = _layer(256)
        d = push_image(sa, a, "bench/lat", f"t{i}", [layer])
        t0 = time.perf_counter()
        while not resolves(sb, b, "bench/lat", f"t{i}", d):
            if time.perf_counter() - t0 > 30:
                raise RuntimeError(f"t{i} never reached B")
            time.sleep(0.002)
        samples.append((time.perf_counter() - t0) * 1000)
    samples.sort()
    return {"n": n, "p50_ms": statistics.median(samples), "p99_ms": samples[min(len(samples) - 1, int(n * 0.99))]}


def _layer(size: int) -> bytes:
    # Real (stored, level 0) gzip streams: skopeo sniffs layers and would compress
    # anything that is not gzip, changing digests and adding CPU work to its side.
    return gzip.compress(os.urandom(size), compresslevel=0)


def _images(n: int, layer_size: int) -> list[list[bytes]]:
    return [[_layer(layer_size) for _ in range(3)] for _ in range(n)]


def _load(url: str, images: list[list[bytes]]) -> dict[str, str]:
    def one(i):
        with requests.Session() as s:
            return f"t{i}", push_image(s, url, "bench/img", f"t{i}", images[i])
    with ThreadPoolExecutor(8) as pool:
        return dict(pool.map(one, range(len(images))))


def _wait_all(url: str, tags: dict[str, str], timeout: float = 600, ns: str = "bench/img") -> None:
    s = requests.Session()
    pending = dict(tags)
    deadline = time.monotonic() + timeout
    while pending:
        for tag, d in list(pending.items()):
            if resolves(s, url, ns, tag, d):
                del pending[tag]
        if pending:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{len(pending)} tags never arrived at {url}")
            time.sleep(0.05)


def throughput(procs: Procs, n: int, layer_size: int) -> dict:
    images = _images(n, layer_size)
    b, _ = procs.angos("tp-b", None)
    a, a_cfg = procs.angos("tp-a", b, worker_queue=True)
    tags = _load(a, images)
    t0 = time.perf_counter()
    procs.spawn([sys.executable, "-m", "angos.cli", "-c", str(a_cfg), "worker", "--queue", "replication"],
                "tp-worker.log")
    _wait_all(b, tags)
    angos_s = time.perf_counter() - t0
    uploads = sum(float(line.rsplit(" ", 1)[1]) for line in requests.get(b + "/metrics").text.splitlines()
                  if line.startswith("http_requests_total{") and 'route="complete-upload"' in line)

    d1, d2 = procs.distribution("dist-1"), procs.distribution("dist-2")
    dtags = _load(d1, images)
    t0 = time.perf_counter()
    res = subprocess.run(["skopeo", "--insecure-policy", "sync", "--src", "docker", "--dest", "docker",
                          "--src-tls-verify=false", "--dest-tls-verify=false",
                          f"{d1.split('//')[1]}/bench/img", d2.split("//")[1] + "/bench"],
                         capture_output=True, text=True, timeout=1800)
    if res.returncode != 0:
        raise RuntimeError(f"skopeo sync failed: {res.stderr[-2000:]}")
    skopeo_s = time.perf_counter() - t0
    s = requests.Session()
    for tag, d in dtags.items():  # sync lands <dest>/<last name component>: bench/img again
        if not resolves(s, d2, "bench/img", tag, d):
            raise RuntimeError(f"skopeo sync missed {tag}: {s.get(d2 + '/v2/_catalog').text}")
    return {"images": n, "blobs": 4 * n, "angos_s": angos_s, "skopeo_sync_s": skopeo_s,
            "ratio": angos_s / skopeo_s, "uploads_on_b": uploads}


class Hung:
    """A TCP listener on 127.0.0.1 that accepts connections and never answers."""

    def __init__(self):
        import socket
        import threading

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(256)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.conns = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                self.conns.append(self.sock.accept()[0])
            except OSError:
                return

    def close(self) -> None:
        self.sock.close()
        for c in self.conns:
            c.close()


def outage(procs: Procs, n: int, outage_secs: float) -> dict:
    port = free_port()
    b, cfg_b = procs.angos("out-b", None, port=port)
    b_proc = procs.procs[-1]
    a, _ = procs.angos("out-a", b)
    os.killpg(b_proc.pid, signal.SIGTERM)
    b_proc.wait(30)
    down_at = time.monotonic()
    sa = requests.Session()
    tags = {f"t{i}": push_image(sa, a, "bench/out", f"t{i}", [_layer(256)]) for i in range(n)}
    time.sleep(max(0.0, outage_secs - (time.monotonic() - down_at)))
    p = procs.spawn([sys.executable, "-m", "angos.cli", "-c", str(cfg_b), "server"], "out-b.log")
    wait_url(b + "/healthz", p)
    back = time.perf_counter()
    _wait_all(b, tags, ns="bench/out")
    failed = requests.get(a + "/_ext/_jobs/failed?queue=replication").json()["failed"]
    return {"n": n, "outage_s": outage_secs, "drain_s": time.perf_counter() - back, "dead_letters": len(failed)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="bench.replication_bench")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--outage", type=float, default=None, help="outage length in seconds (default 120, quick 10)")
    args = p.parse_args(argv)
    n_lat, n_img, size = (20, 10, 256 * 1024) if args.quick else (200, 200, 1024 * 1024)
    outage_secs = args.outage if args.outage is not None else (10.0 if args.quick else 120.0)
    procs = Procs()
    hung = Hung()
    try:
        lat = latency(procs, n_lat)
        lat_hung = latency(procs, n_lat, hung=hung.url)
        tp = throughput(procs, n_img, size)
        out = outage(procs, 300, outage_secs)
    finally:
        hung.close()
        procs.close()
    print("\n## Replication\n")
    print("| measurement | angos | skopeo sync (Distribution → Distribution) | ratio |")
    print("|---|---|---|---|")
    print(f"| PUT on A → tag on B, {lat['n']} pushes | p50 {lat['p50_ms']:.0f} ms, p99 {lat['p99_ms']:.0f} ms | | |")
    print(f"| the same while A also replicates to a hung server | p50 {lat_hung['p50_ms']:.0f} ms, "
          f"p99 {lat_hung['p99_ms']:.0f} ms | | {lat_hung['p50_ms'] / lat['p50_ms']:.2f}× p50 |")
    print(f"| {out['n']} tags pushed during a {out['outage_s']:.0f} s outage of B, from B's return until all "
          f"on B | {out['drain_s']:.1f} s, {out['dead_letters']} dead letters | | |")
    print(f"| {tp['images']} images × 3 layers × {size // 1024} KiB, until all on B | {tp['angos_s']:.1f} s | "
          f"{tp['skopeo_sync_s']:.1f} s | {tp['ratio']:.2f}× time |")
    print(f"| blob uploads received by B ({tp['blobs']} distinct blobs) | {tp['uploads_on_b']:.0f} | | |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
