"""Pull-through cache benchmark (``python -m bench --only cache``); a benchmark, not a test.

One CNCF Distribution 2.8 is the upstream. A byte-counting TCP relay sits in
front of it, and *every* path to the upstream goes through that relay (the
direct pulls too), so its small cost is the same for all three and it counts
the bytes each cache downloads. Compared, on the same image and machine:

1. Cold pull (``skopeo copy`` into a new ``oci:`` directory, 20 layers,
   ~200 MiB): directly from the upstream, through a fresh Angos cache, and
   through a fresh Distribution in proxy mode (``proxy: remoteurl:``).
   Goal: Angos ≤ 1.15× the direct time. For scale, the same pull through
   :mod:`bench.floor_relay` (a bare relay that hashes, writes and forwards
   every byte, and does nothing else) gives the floor of that ratio for any
   cache on this machine.
2. Warm pull: the same pull again from each cache. Goal: Angos at least as
   fast as the Distribution proxy (ratio ≥ 1.0 = Distribution's time over
   Angos's).
3. Upstream bytes per cold pull, over the image's size. Goal: 1.0×.
4. 20 concurrent cold pullers of one image (threads fetching the manifest
   and every blob, bytes discarded) against a fresh cache of each kind:
   wall time and upstream bytes over the image size. Goal: still 1.0×.

Each repetition pushes a new random image, so every cold pull is cold. The
medians are printed as a Markdown table (docs/performance.md keeps the last
run). Everything listens on 127.0.0.1 and is removed on exit or Ctrl-C.
"""

from __future__ import annotations

import argparse
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

from .data import build_oci_layout, layout_manifest_digest
from .servers import Angos, Distribution, machine, wait_url

MiB = 1024 * 1024
ACCEPT = "application/vnd.oci.image.manifest.v1+json"


class ByteRelay:
    """A TCP relay to ``port`` on 127.0.0.1 counting the bytes that flow back to clients.

    ``mbit``: the bytes flowing back share one link of that many megabits per second, as when the
    upstream is another site's registry (all connections together, like a real uplink); None: as
    fast as loopback goes."""

    def __init__(self, port: int, mbit: float | None = None):
        self.target = port
        self.rate = mbit * 1e6 / 8 if mbit else None  # bytes per second
        self._free_at = 0.0  # when the paced link has sent everything handed to it so far
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(256)
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.host = f"127.0.0.1:{self.port}"
        self.down = 0
        self._lock = threading.Lock()
        self._stop = False

    def __enter__(self) -> "ByteRelay":
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop = True
        self.sock.close()

    def reset(self) -> None:
        with self._lock:
            self.down = 0

    def _accept(self) -> None:
        while not self._stop:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target))
            threading.Thread(target=self._pipe, args=(client, upstream, False), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, True), daemon=True).start()

    def _pipe(self, src, dst, count: bool) -> None:
        try:
            while True:
                data = src.recv(256 * 1024)
                if not data:
                    break
                if count and self.rate:
                    with self._lock:
                        self._free_at = max(self._free_at, time.monotonic()) + len(data) / self.rate
                        due = self._free_at
                    time.sleep(max(0.0, due - time.monotonic()))
                dst.sendall(data)
                if count:
                    with self._lock:
                        self.down += len(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


class AngosCache(Angos):
    """Angos whose repository ``hub`` pulls through ``upstream`` (the rest as in bench.servers)."""

    name = "angos-cache"

    def __init__(self, upstream: str, parent_dir: str | None = None):
        super().__init__(parent_dir)
        self.config_path.write_text(self.config_path.read_text() + textwrap.dedent(f"""
            [repository."hub"]
            [[repository."hub".upstream]]
            url = "{upstream}"
            """))


class DistributionProxy(Distribution):
    name = "distribution-proxy"

    def __init__(self, upstream: str, parent_dir: str | None = None):
        super().__init__(parent_dir)
        self.config_path.write_text(self.config_path.read_text() + f"proxy:\n  remoteurl: {upstream}\n")


class FloorRelay:
    """bench.floor_relay in its own process, in front of ``port``."""

    def __init__(self, port: int):
        self.proc = subprocess.Popen([sys.executable, "-m", "bench.floor_relay", str(port)], stdout=subprocess.PIPE,
                                     text=True, cwd=Path(__file__).resolve().parent.parent)
        self.host = f"127.0.0.1:{int(self.proc.stdout.readline())}"

    def __enter__(self) -> "FloorRelay":
        return self

    def __exit__(self, *exc) -> None:
        self.proc.terminate()  # SIGTERM: it removes its files
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _skopeo_pull(host: str, ref: str, dest: Path, digest: str) -> float:
    cmd = ["skopeo", "--insecure-policy", "copy", "--quiet", "--src-tls-verify=false", f"docker://{host}/{ref}",
           f"oci:{dest}:latest"]
    t0 = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    took = time.perf_counter() - t0
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{res.stderr}")
    if layout_manifest_digest(dest) != digest:
        raise RuntimeError(f"{host}/{ref}: pulled the wrong manifest")
    shutil.rmtree(dest, ignore_errors=True)
    return took


def _push(layout: Path, host: str, ref: str) -> None:
    subprocess.run(["skopeo", "--insecure-policy", "copy", "--quiet", "--dest-tls-verify=false",
                    f"oci:{layout}:latest", f"docker://{host}/{ref}"], check=True, capture_output=True, timeout=900)


def _settle(cache) -> None:
    """Wait until an Angos cache has no fill in progress (background fills included)."""
    if not isinstance(cache, AngosCache):
        time.sleep(0.5)
        return
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        text = requests.get(cache.url + "/metrics", timeout=10).text
        line = next((ln for ln in text.splitlines() if ln.startswith("angos_cache_fills_in_progress ")), None)
        if line is None or float(line.split()[1]) == 0:
            return
        time.sleep(0.1)


def _concurrent_pull(url: str, ref_path: str, clients: int) -> float:
    """``clients`` threads each GET the manifest and every blob (read and discarded)."""
    barrier = threading.Barrier(clients)

    def one(_):
        with requests.Session() as s:
            barrier.wait(60)
            m = s.get(f"{url}/v2/{ref_path}/manifests/latest", headers={"Accept": ACCEPT}, timeout=600)
            m.raise_for_status()
            doc = m.json()
            for desc in [doc["config"], *doc["layers"]]:
                with s.get(f"{url}/v2/{ref_path}/blobs/{desc['digest']}", stream=True, timeout=600) as r:
                    r.raise_for_status()
                    got = sum(len(c) for c in r.iter_content(1 << 20))
                if got != desc["size"]:
                    raise RuntimeError(f"short blob {desc['digest']}: {got} of {desc['size']}")

    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(one, range(clients)))
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench --only cache", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small images, one repetition (smoke run)")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--clients", type=int, default=20)
    p.add_argument("--upstream-mbit", type=float, default=None, metavar="N",
                   help="the upstream's answers share an N Mbit/s link (default: loopback speed)")
    args = p.parse_args(argv)
    layers, size = (5, 1 * MiB) if args.quick else (20, 10 * MiB)
    conc_layers, conc_size = (5, 512 * 1024) if args.quick else (20, 5 * MiB // 2)
    repeat = 1 if args.quick else args.repeat
    if shutil.which("skopeo") is None:
        raise SystemExit("cache bench: skopeo is not installed")
    print(f"cache bench: {machine()}", flush=True)
    if args.upstream_mbit:
        print(f"upstream link: {args.upstream_mbit:g} Mbit/s, shared by every connection to it", flush=True)
    work = Path(tempfile.mkdtemp(prefix="angos-cache-bench-"))
    rows: dict[str, list[float]] = {}

    def add(key: str, value: float) -> None:
        rows.setdefault(key, []).append(value)

    try:
        with Distribution() as upstream, ByteRelay(upstream.port, args.upstream_mbit) as relay:
            for i in range(repeat):
                layout = work / f"img-{i}"
                info = build_oci_layout(layout, layers, size, size, seed=1400 + i)
                _push(layout, upstream.host, f"bench/img-{i}:latest")
                digest, image_bytes = info["manifest_digest"], info["bytes"]
                add("direct cold", _skopeo_pull(relay.host, f"bench/img-{i}:latest", work / "out", digest))
                with FloorRelay(relay.port) as floor:
                    add("floor cold", _skopeo_pull(floor.host, f"bench/img-{i}:latest", work / "out", digest))
                for label, make, ref in (("angos", lambda: AngosCache(relay.url), f"hub/bench/img-{i}:latest"),
                                         ("distribution", lambda: DistributionProxy(relay.url),
                                          f"bench/img-{i}:latest")):
                    with make() as cache:
                        relay.reset()
                        cold = _skopeo_pull(cache.host, ref, work / "out", digest)
                        _settle(cache)
                        add(f"{label} upstream bytes", relay.down / image_bytes)
                        warm = _skopeo_pull(cache.host, ref, work / "out", digest)
                        add(f"{label} cold", cold)
                        add(f"{label} warm", warm)
                        print(f"  #{i + 1} {label}: cold {cold:.2f} s, warm {warm:.2f} s, upstream bytes "
                              f"{relay.down / image_bytes:.3f}× of {image_bytes / MiB:.1f} MiB", flush=True)
                print(f"  #{i + 1} direct: cold {rows['direct cold'][-1]:.2f} s; through the floor relay "
                      f"{rows['floor cold'][-1]:.2f} s", flush=True)
                shutil.rmtree(layout, ignore_errors=True)

            layout = work / "conc"
            info = build_oci_layout(layout, conc_layers, conc_size, conc_size, seed=1499)
            _push(layout, upstream.host, "bench/conc:latest")
            for label, make, path in (("angos", lambda: AngosCache(relay.url), "hub/bench/conc"),
                                      ("distribution", lambda: DistributionProxy(relay.url), "bench/conc")):
                with make() as cache:
                    wait_url(cache.url + "/v2/", cache.proc)
                    relay.reset()
                    took = _concurrent_pull(cache.url, path, args.clients)
                    _settle(cache)
                    add(f"{label} concurrent", took)
                    add(f"{label} concurrent bytes", relay.down / info["bytes"])
                    print(f"  {args.clients} concurrent cold pullers, {label}: {took:.2f} s, upstream bytes "
                          f"{relay.down / info['bytes']:.3f}× of {info['bytes'] / MiB:.1f} MiB", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    med = {k: statistics.median(v) for k, v in rows.items()}
    print("\n| measurement | angos | Distribution proxy | direct | ratio | goal |\n|---|---|---|---|---|---|")
    print(f"| cold pull, {layers} layers × {size // MiB} MiB | {med['angos cold']:.2f} s | "
          f"{med['distribution cold']:.2f} s | {med['direct cold']:.2f} s | "
          f"{med['angos cold'] / med['direct cold']:.2f}× direct | ≤ 1.15× |")
    print(f"| cold pull through the floor relay (sha256 + write + forward only) | {med['floor cold']:.2f} s | | "
          f"{med['direct cold']:.2f} s | {med['floor cold'] / med['direct cold']:.2f}× direct: the least any "
          f"cache adds here | |")
    print(f"| warm pull | {med['angos warm']:.2f} s | {med['distribution warm']:.2f} s | | "
          f"{med['distribution warm'] / med['angos warm']:.2f} (Distribution ÷ angos) | ≥ 1.0 |")
    print(f"| upstream bytes per cold pull | {med['angos upstream bytes']:.3f}× | "
          f"{med['distribution upstream bytes']:.3f}× | | | 1.0× |")
    print(f"| {args.clients} concurrent cold pullers, {conc_layers} × {conc_size / MiB:g} MiB | "
          f"{med['angos concurrent']:.2f} s, {med['angos concurrent bytes']:.3f}× bytes | "
          f"{med['distribution concurrent']:.2f} s, {med['distribution concurrent bytes']:.3f}× bytes | | | 1.0× bytes |")
    print(f"\n(medians of {repeat}; upstream bytes include HTTP headers and token-free requests, counted "
          f"by the relay in front of the upstream)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
