"""Reconcile benchmark (``python -m bench --only scrub``; ``python bench/scrub_bench.py --quick``).

Measures ``angos scrub --replicate --dry-run`` of 10,000 tags across 100
namespaces against an Angos downstream that is already in sync, so every
probe is a HEAD that matches and nothing is enqueued: the cost measured is
the reconcile itself (listing local tags, HEADing each on the downstream),
which must be proportional to tags, not bytes (target: under 60 s here).

Content is created directly through a local ``angos.registry`` Registry
(no HTTP, one tiny config blob shared by every manifest), then the source's
data directory is copied to become the downstream's, which is what "in
sync" means byte for byte. Only the downstream runs a server; scrub reads
the source's storage directly. ``--quick`` uses 10 namespaces × 100 tags.

Prints the elapsed time of the scrub process, the reconcile's own elapsed
time from its summary line, and HEADs per second.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.servers import free_port, wait_url  # noqa: E402 - after the sys.path set-up

OCI = "application/vnd.oci.image.manifest.v1+json"


def _config(data: Path, port: int, downstream: str | None = None, workers: int = 2) -> str:
    text = (f'[server]\nbind_address = "127.0.0.1"\nport = {port}\nworkers = {workers}\n\n'
            f'[blob_store.fs]\nroot_dir = "{data}"\n\n[global.access_policy]\ndefault = "allow"\n\n'
            f'[repository."bench"]\n')
    if downstream:
        text += f'[[repository."bench".downstream]]\nname = "peer"\nurl = "{downstream}"\nmode = "reconcile-only"\n'
    return text


def populate(cfg_path: Path, namespaces: int, tags: int) -> None:
    from angos.config import load_config
    from angos.oci.digest import Digest
    from angos.registry import build_registry
    from angos.registry.manifests import WritePolicy

    reg = build_registry(load_config([str(cfg_path)]))
    config = json.dumps({"architecture": "amd64", "os": "linux"}).encode()
    cd = Digest.of(config)
    for n in range(namespaces):
        ns = f"bench/ns{n:03d}"
        reg.uploads.monolithic(ns, cd, [config], len(config))
        for t in range(tags):
            body = json.dumps({"schemaVersion": 2, "mediaType": OCI, "annotations": {"n": f"{n}-{t}"},
                               "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                          "digest": str(cd), "size": len(config)}, "layers": []}).encode()
            reg.manifests.put(ns, f"t{t:04d}", body, OCI, WritePolicy())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="10 namespaces x 100 tags")
    p.add_argument("--namespaces", type=int, default=100)
    p.add_argument("--tags", type=int, default=100, help="tags per namespace")
    args = p.parse_args(argv)
    namespaces = 10 if args.quick else args.namespaces
    total = namespaces * args.tags

    work = Path(tempfile.mkdtemp(prefix="angos-scrub-bench-"))
    server = None
    try:
        src_data, down_data = work / "source", work / "downstream"
        port = free_port()
        down_cfg = work / "downstream.toml"
        down_cfg.write_text(_config(down_data, port))
        src_cfg = work / "source.toml"
        src_cfg.write_text(_config(src_data, free_port(), downstream=f"http://127.0.0.1:{port}"))

        started = time.monotonic()
        populate(src_cfg, namespaces, args.tags)
        shutil.copytree(src_data, down_data, ignore=shutil.ignore_patterns("_locks", "_jobs"))
        print(f"scrub bench: created {total} tags in {namespaces} namespaces in {time.monotonic() - started:.1f}s")

        env = dict(os.environ, PYTHONPATH=str(ROOT), RUST_LOG="warn")
        log = open(work / "downstream.log", "ab")
        server = subprocess.Popen([sys.executable, "-m", "angos.cli", "-c", str(down_cfg), "server"], cwd=work,
                                  stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        wait_url(f"http://127.0.0.1:{port}/healthz", server)

        t0 = time.monotonic()
        run = subprocess.run([sys.executable, "-m", "angos.cli", "-c", str(src_cfg), "scrub", "--replicate",
                              "--dry-run"], cwd=work, capture_output=True, text=True, env=env)
        elapsed = time.monotonic() - t0
        if run.returncode != 0:
            print(run.stdout[-2000:], run.stderr[-2000:], file=sys.stderr)
            raise RuntimeError(f"scrub exited with {run.returncode}")
        summary = run.stdout.strip().splitlines()[-1]
        actions = [line for line in run.stdout.splitlines() if line.startswith("Enqueue")]
        checked = int(re.search(r"tags_checked=(\d+)", summary).group(1))
        inner = float(re.search(r"elapsed=([\d.]+)s", summary).group(1))
        if checked != total or actions:
            raise RuntimeError(f"expected {total} probes and no actions, got {checked} and {len(actions)}: {summary}")
        print(f"scrub bench: {summary}")
        print(f"scrub bench: reconcile of {total} in-sync tags: {elapsed:.1f}s wall (process), {inner:.1f}s reconcile, "
              f"{total / inner:.0f} HEADs/s; target < 60 s for 10,000 tags: "
              f"{'met' if total < 10000 or elapsed < 60 else 'MISSED'}")
        return 0
    finally:
        if server is not None and server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
            try:
                server.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
