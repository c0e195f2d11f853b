"""``skopeo copy`` push and pull of a multi-layer image (seconds, lower is better).

Each repetition builds a fresh OCI layout (new random layers), so no server
has the blobs yet and skopeo's blob-info cache knows no location to mount
from: every repetition is a full push. Push is ``oci:<layout>:latest`` →
``docker://<server>/bench/skopeo-<i>:latest``; pull is the reverse into a new
empty layout directory. The pulled manifest digest must equal the pushed one.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from .data import build_oci_layout, layout_manifest_digest
from .report import Metric
from .servers import Stopwatch


def _skopeo(server, *args: str, timeout: float = 600) -> Stopwatch:
    cmd = ["skopeo", "--insecure-policy", "copy", "--quiet", *args]
    with Stopwatch(server) as sw:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({res.returncode}):\n{res.stderr}")
    return sw


def measure(servers: dict, workdir: Path, layers: int, min_size: int, max_size: int, repeats: int,
            push: Metric, pull: Metric, push_cpu: Metric | None, pull_cpu: Metric | None, log) -> None:
    if shutil.which("skopeo") is None:
        raise RuntimeError("skopeo is not installed (apt-get install skopeo)")
    for i in range(repeats):
        layout = workdir / f"image-{i}"
        info = build_oci_layout(layout, layers, min_size, max_size, seed=4242 + i)
        order = list(servers.items()) if i % 2 == 0 else list(servers.items())[::-1]
        for label, srv in order:
            ref = f"docker://{srv.host}/bench/skopeo-{i}:latest"
            sw_push = _skopeo(srv, "--dest-tls-verify=false", f"oci:{layout}:latest", ref)
            pulled = workdir / f"pulled-{label}-{i}"
            sw_pull = _skopeo(srv, "--src-tls-verify=false", ref, f"oci:{pulled}:latest")
            got = layout_manifest_digest(pulled)
            if got != info["manifest_digest"]:
                raise RuntimeError(f"{label}: pulled manifest {got} != pushed {info['manifest_digest']}")
            shutil.rmtree(pulled, ignore_errors=True)
            push.add(label, sw_push.wall)
            pull.add(label, sw_pull.wall)
            if push_cpu is not None:
                push_cpu.add(label, sw_push.cpu)
            if pull_cpu is not None:
                pull_cpu.add(label, sw_pull.cpu)
            log(f"  skopeo {label} #{i + 1}: push {sw_push.wall:.2f} s (server CPU {sw_push.cpu:.2f} s), "
                f"pull {sw_pull.wall:.2f} s (server CPU {sw_pull.cpu:.2f} s) "
                f"({info['layers']} layers, {info['bytes'] / (1 << 20):.1f} MiB)")
        shutil.rmtree(layout, ignore_errors=True)
