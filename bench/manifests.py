"""Manifest GET load with ``wrk``: requests/s, p50 and p99 latency at a fixed concurrency.

Each server gets the same small OCI image (config, one 1 KiB layer, manifest
tagged ``latest``); ``wrk`` then GETs ``/v2/bench/manifest/manifests/latest``
with the OCI ``Accept`` header over ``connections`` keep-alive connections for
``duration`` seconds. A short untimed warm-up run precedes the measured runs
on each server. A Lua ``done()`` hook prints one machine-readable line with
the request count, duration, latency percentiles and error counts; any
non-2xx answer or socket error fails the measurement rather than flattering it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile

from .client import Client
from .data import OCI_MANIFEST, make_config, make_manifest
from .report import Metric
from .servers import Stopwatch

REPO = "bench/manifest"

_LUA = """\
wrk.headers["Accept"] = "application/vnd.oci.image.manifest.v1+json"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("BENCH requests=%d duration_us=%d p50_us=%d p99_us=%d status_errors=%d socket_errors=%d\\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.status, e.connect + e.read + e.write + e.timeout))
end
"""

_LINE = re.compile(r"BENCH requests=(\d+) duration_us=(\d+) p50_us=(\d+) p99_us=(\d+) "
                   r"status_errors=(\d+) socket_errors=(\d+)")


def push_fixture(port: int) -> str:
    """Push the image; returns the manifest digest."""
    import hashlib

    layer = os.urandom(1024)
    layer_digest = "sha256:" + hashlib.sha256(layer).hexdigest()
    config = make_config([layer_digest])
    config_digest = "sha256:" + hashlib.sha256(config).hexdigest()
    manifest = make_manifest([(layer_digest, len(layer))], config)
    with Client(port) as c:
        c.upload_bytes(REPO, layer_digest, layer)
        c.upload_bytes(REPO, config_digest, config)
        return c.put_manifest(REPO, "latest", manifest, OCI_MANIFEST)


def run_wrk(url: str, connections: int, duration: float, threads: int, script: str) -> dict:
    if shutil.which("wrk") is None:
        raise RuntimeError("wrk is not installed (apt-get install wrk)")
    cmd = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration:g}s", "--timeout", "10s", "-s", script, url]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60)
    m = _LINE.search(res.stdout)
    if res.returncode != 0 or not m:
        raise RuntimeError(f"{' '.join(cmd)} failed ({res.returncode}):\n{res.stdout}\n{res.stderr}")
    requests, duration_us, p50, p99, status_errors, socket_errors = map(int, m.groups())
    if status_errors or socket_errors:
        raise RuntimeError(f"wrk against {url}: {status_errors} non-2xx answers, {socket_errors} socket errors")
    return {"rps": requests / (duration_us / 1e6), "p50_ms": p50 / 1000, "p99_ms": p99 / 1000,
            "requests": requests}


def measure(servers: dict, connections: int, duration: float, warmup: float, repeats: int, threads: int,
            rps: Metric, p50: Metric, p99: Metric, cpu: Metric | None, log) -> None:
    urls = {}
    for label, srv in servers.items():
        push_fixture(srv.port)
        urls[label] = f"{srv.url}/v2/{REPO}/manifests/latest"
    with tempfile.NamedTemporaryFile("w", suffix=".lua", prefix="bench-wrk-") as script:
        script.write(_LUA)
        script.flush()
        for label, url in urls.items():
            run_wrk(url, connections, warmup, threads, script.name)
        for i in range(repeats):
            order = list(servers.items()) if i % 2 == 0 else list(servers.items())[::-1]
            for label, srv in order:
                with Stopwatch(srv) as sw:
                    r = run_wrk(urls[label], connections, duration, threads, script.name)
                rps.add(label, r["rps"])
                p50.add(label, r["p50_ms"])
                p99.add(label, r["p99_ms"])
                if cpu is not None:
                    cpu.add(label, sw.cpu * 1000 / r["requests"])
                log(f"  manifest GET {label} #{i + 1}: {r['rps']:,.0f} req/s, p50 {r['p50_ms']:.2f} ms, "
                    f"p99 {r['p99_ms']:.2f} ms ({r['requests']} requests, server CPU "
                    f"{sw.cpu * 1000 / r['requests']:.3f} ms/request)")
