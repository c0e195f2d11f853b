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

The second part (``--part feed``) measures reconcile between two Angos
instances through their change feeds: 100,000 in-sync tags (100 namespaces
× 1,000; ``--quick``: 10 × 100), a first ``angos replicate`` that compares
everything and saves the cursors, then 100 changes (50 written on each side,
recorded in each side's feed), then ``angos replicate --dry-run --full``
against ``angos replicate --dry-run`` (the change feeds): once each as a
command (wall time, Python start-up included), then :data:`REPEAT` times each
in this process (the reconcile alone; medians). Every run must plan the same
actions. Goals: the feed run under 2 s and at least 50× faster than the full
comparison (both ways of counting are printed). The source's changes are made in-process on a Registry with
the change feed wired (as the server wires it); the downstream's through its
HTTP API.
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


def _stop(server) -> None:
    """Stop a server process group started by this bench (SIGTERM, then SIGKILL after 30 s)."""
    if server is not None and server.poll() is None:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)


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
    p.add_argument("--part", choices=("probe", "feed", "all"), default="all",
                   help="probe: HEAD-probe reconcile; feed: full comparison against the change feeds")
    p.add_argument("--feed-tags", type=int, default=1000, help="tags per namespace for --part feed")
    args = p.parse_args(argv)
    rc = 0
    if args.part in ("probe", "all"):
        rc |= probe_bench(args)
    if args.part in ("feed", "all"):
        rc |= feed_bench(10 if args.quick else args.namespaces, 100 if args.quick else args.feed_tags)
    return rc


def probe_bench(args) -> int:
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
        _stop(server)
        shutil.rmtree(work, ignore_errors=True)


def _manifest(seed: str) -> tuple[bytes, bytes]:
    """(config blob, manifest body) of a tiny image that differs by ``seed``."""
    config = json.dumps({"architecture": "amd64", "os": "linux", "seed": seed}).encode()
    from angos.oci.digest import Digest

    body = json.dumps({"schemaVersion": 2, "mediaType": OCI, "config": {
        "mediaType": "application/vnd.oci.image.config.v1+json", "digest": str(Digest.of(config)),
        "size": len(config)}, "layers": []}).encode()
    return config, body


def _tag_many(reg, ns: str, seed: str, tags: list[str]) -> None:
    """Point ``tags`` at one small manifest (a few hundred per put, as a by-digest push with ?tag= does)."""
    from angos.oci.digest import Digest
    from angos.registry.manifests import WritePolicy

    config, body = _manifest(seed)
    reg.uploads.monolithic(ns, Digest.of(config), [config], len(config))
    for i in range(0, len(tags), 200):
        reg.manifests.put(ns, str(Digest.of(body)), body, OCI, WritePolicy(), tags[i:i + 200])


def _replicate(cfg: Path, work: Path, env: dict, *args: str) -> tuple[float, str, list[str]]:
    """Run ``angos replicate ARGS``: (wall seconds, summary line, action lines)."""
    t0 = time.monotonic()
    run = subprocess.run([sys.executable, "-m", "angos.cli", "-c", str(cfg), "replicate", *args], cwd=work,
                         capture_output=True, text=True, env=env)
    wall = time.monotonic() - t0
    if run.returncode != 0:
        print(run.stdout[-2000:], run.stderr[-2000:], file=sys.stderr)
        raise RuntimeError(f"angos replicate {' '.join(args)} exited with {run.returncode}")
    lines = run.stdout.strip().splitlines()
    return wall, lines[-1], [line for line in lines if line.startswith("Enqueue")]


def _field(summary: str, key: str) -> str:
    return re.search(rf"\b{key}=(\S+)", summary).group(1)


REPEAT = 5


def _median_plan(cfg_path: Path, full: bool, actions: list[str]) -> float:
    """Median seconds of planning a dry run in this process (what ``angos replicate --dry-run`` does
    after start-up), checking each run plans ``actions``."""
    import statistics

    from angos.config import load_config
    from angos.registry import build_registry
    from angos.replication.reconcile import Report, _Progress, plan
    from angos.replication.reconcile_feed import FeedPlanner

    cfg = load_config([str(cfg_path)])
    registry = build_registry(cfg)
    times = []
    for _ in range(REPEAT):
        report = Report()
        t0 = time.perf_counter()
        planned = plan(cfg, registry, report, _Progress(open(os.devnull, "w")),
                       feeds=FeedPlanner(cfg, registry, full=full, dry_run=True))
        times.append(time.perf_counter() - t0)
        if [a.line() for a in planned] != actions or (report.in_full, report.by_feed) != ((1, 0) if full else (0, 1)):
            raise RuntimeError(f"in-process plan (full={full}) differs from the command's: {report.summary()}")
    return statistics.median(times)


def feed_bench(namespaces: int, per_ns: int) -> int:
    """Full comparison against the change feeds, ``namespaces`` × ``per_ns`` in-sync tags, 100 changed."""
    import requests

    from angos.config import load_config
    from angos.registry import build_registry
    from angos.replication.changefeed import wire

    total = namespaces * per_ns
    work = Path(tempfile.mkdtemp(prefix="angos-feed-bench-"))
    server = None
    try:
        src_data, down_data = work / "source", work / "downstream"
        port = free_port()
        down_cfg, src_cfg = work / "downstream.toml", work / "source.toml"
        down_cfg.write_text(_config(down_data, port))
        src_cfg.write_text(_config(src_data, free_port(), downstream=f"http://127.0.0.1:{port}"))
        started = time.monotonic()
        reg = build_registry(load_config([str(src_cfg)]))
        for n in range(namespaces):
            _tag_many(reg, f"bench/ns{n:03d}", "base", [f"t{t:05d}" for t in range(per_ns)])
        shutil.copytree(src_data, down_data, ignore=shutil.ignore_patterns("_locks", "_jobs", "_changes"))
        print(f"feed bench: {total} in-sync tags in {namespaces} namespaces, made in "
              f"{time.monotonic() - started:.1f}s")

        env = dict(os.environ, PYTHONPATH=str(ROOT), RUST_LOG="warn")
        log = open(work / "downstream.log", "ab")
        server = subprocess.Popen([sys.executable, "-m", "angos.cli", "-c", str(down_cfg), "server"], cwd=work,
                                  stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        down = f"http://127.0.0.1:{port}"
        wait_url(f"{down}/healthz", server)

        first, summary, _ = _replicate(src_cfg, work, env)   # no cursors yet: compares all, saves them
        if _field(summary, "in_full") != "1" or _field(summary, "enqueued") != "0":
            raise RuntimeError(f"the first run should compare everything and find it in sync: {summary}")
        print(f"feed bench: first run (full, in sync, saves the cursors): {first:.1f}s; {summary}")

        # 100 changes: on each side 25 tags moved to a new manifest and 25 deleted, in different namespaces.
        wire(reg)  # the source's writes now reach its change feed, as the server's do
        config, body = _manifest("changed")
        from angos.oci.digest import Digest

        moved = [f"t{t:05d}" for t in range(25)]
        gone = [f"t{t:05d}" for t in range(25, 50)]
        _tag_many(reg, "bench/ns000", "changed", moved)
        for tag in gone:
            reg.manifests.delete("bench/ns000", tag)
        peer_ns = f"bench/ns{namespaces - 1:03d}"
        assert requests.post(f"{down}/v2/{peer_ns}/blobs/uploads/?digest={Digest.of(config)}", data=config,
                             timeout=30).status_code == 201
        r = requests.put(f"{down}/v2/{peer_ns}/manifests/{Digest.of(body)}", data=body, timeout=30,
                         params=[("tag", t) for t in moved], headers={"Content-Type": OCI})
        assert r.status_code == 201, r.text
        for tag in gone:
            assert requests.delete(f"{down}/v2/{peer_ns}/manifests/{tag}", timeout=30).status_code == 202

        full, full_summary, full_actions = _replicate(src_cfg, work, env, "--dry-run", "--full")
        feed, feed_summary, feed_actions = _replicate(src_cfg, work, env, "--dry-run")
        if _field(feed_summary, "by_feed") != "1" or _field(full_summary, "in_full") != "1":
            raise RuntimeError(f"expected one full and one feed run: {full_summary} / {feed_summary}")
        if full_actions != feed_actions or len(feed_actions) != 50:
            raise RuntimeError(f"the feed run planned {len(feed_actions)} actions, the full one "
                               f"{len(full_actions)}; both should plan the source's 50")
        print(f"feed bench: angos replicate --dry-run --full: {full:.2f}s wall; {full_summary}")
        print(f"feed bench: angos replicate --dry-run:        {feed:.2f}s wall; {feed_summary}")
        # The comparison itself, without the process start-up both pay alike: timed in this process.
        plan_full = _median_plan(src_cfg, full=True, actions=feed_actions)
        plan_feed = _median_plan(src_cfg, full=False, actions=feed_actions)
        print(f"feed bench: reconcile of {total} tags with 100 changed (median of {REPEAT}, in-process, "
              f"dry run): full comparison {plan_full:.3f}s, change feeds {plan_feed:.3f}s: "
              f"{plan_full / plan_feed:.0f}x; command wall {full:.2f}s against {feed:.2f}s: {full / feed:.1f}x")
        print(f"feed bench: goals: change-feed reconcile under 2 s: {'met' if feed < 2 else 'MISSED'} "
              f"({feed:.2f}s with start-up); at least 50x faster: "
              f"{'met' if plan_full / plan_feed >= 50 else 'MISSED'} for the reconcile, "
              f"{'met' if full / feed >= 50 else 'MISSED'} for the whole command")
        return 0
    finally:
        _stop(server)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
