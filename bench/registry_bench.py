"""angos against CNCF Distribution 2.8 on loopback, in one run, with ratios angos/distribution.

Usage: ``python -m bench --only registry [--quick] [--repeat N] [--measure a,b]``.

Both servers are started once, side by side, with equivalent filesystem
storage in temporary directories, and every measurement alternates between
them, so both see the same machine state and the ratios are fair even when
absolute numbers drift. Each measurement is repeated ``--repeat`` times and
the median is reported; every sample is printed too. The final output is a
Markdown table ready for ``docs/performance.md``.

Everything the run creates (data, servers, layouts) lives under one temporary
directory that is removed, and every server stopped, on normal exit, on an
exception, on Ctrl-C and on SIGTERM (``python -m bench`` turns SIGTERM into
KeyboardInterrupt).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import shutil
import sys
import tempfile
from pathlib import Path

from . import blobs, manifests, servers, skopeo
from .data import BlobFile
from .report import Metric, samples_line, table

MiB = 1 << 20
MEASUREMENTS = ("blob-put", "blob-get", "chunked", "manifest", "skopeo")

FULL = {"blob": 1024 * MiB, "chunked": 256 * MiB, "chunk": 16 * MiB, "wrk_duration": 20.0, "wrk_warmup": 3.0,
        "layers": 20, "layer_min": 1 * MiB, "layer_max": 4 * MiB, "repeat": 3}
QUICK = {"blob": 64 * MiB, "chunked": 32 * MiB, "chunk": 4 * MiB, "wrk_duration": 2.0, "wrk_warmup": 1.0,
         "layers": 20, "layer_min": 32 * 1024, "layer_max": 128 * 1024, "repeat": 3}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench --only registry", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small sizes and short runs (a smoke test)")
    p.add_argument("--repeat", type=int, help="repetitions per measurement (median reported)")
    p.add_argument("--measure", default=",".join(MEASUREMENTS),
                   help=f"comma list of measurements to run (default all: {','.join(MEASUREMENTS)})")
    p.add_argument("--workers", type=int, default=2, help="angos gunicorn workers (default 2)")
    p.add_argument("--connections", type=int, default=32, help="wrk connections (default 32)")
    p.add_argument("--tmpdir", help="parent directory for data (default: the system temp dir)")
    p.add_argument("--recycle-memory", action="store_true",
                   help="before each timed upload write and delete a scratch file of its size, so uploads "
                        "write into recycled memory (see docs/performance.md)")
    p.add_argument("--buffered-uploads", action="store_true",
                   help="run angos with [blob_store.fs] direct_io = false (uploads through the page cache)")
    args = p.parse_args(argv)
    args.measure = [m.strip() for m in args.measure.split(",") if m.strip()]
    unknown = set(args.measure) - set(MEASUREMENTS)
    if unknown:
        p.error(f"unknown measurement(s) {', '.join(sorted(unknown))}; valid: {', '.join(MEASUREMENTS)}")
    return args


def log(msg: str) -> None:
    print(msg, flush=True)


def header(sizes: dict, args) -> str:
    m = servers.machine()
    v = servers.versions()
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    mode = "quick (smoke run, not for the record)" if args.quick else "full"
    if args.recycle_memory:
        mode += ", uploads into recycled memory"
    if args.buffered_uploads:
        mode += ", angos uploads buffered (direct_io = false)"
    return "\n".join([
        f"Run: {now}, mode {mode}, median of {sizes['repeat']} repetitions",
        f"Machine: {m['nproc']} CPUs, {m['cpu']}, kernel {m['kernel']}, load average at start {m['load']}",
        f"Software: Python {v['python']}, gunicorn {v['gunicorn']}, gevent {v['gevent']}, "
        f"{v['distribution']}, {v['wrk'].split(' Copyright')[0]}, {v['skopeo']}",
        f"Angos: {args.workers} gunicorn gevent workers, fs storage, allow-all; Distribution: filesystem "
        f"storage, inmemory blob descriptor cache, access log off",
        f"Sizes: blob {sizes['blob'] // MiB} MiB; chunked {sizes['chunked'] // MiB} MiB in "
        f"{sizes['chunk'] // MiB} MiB PATCHes; wrk -c{args.connections} for {sizes['wrk_duration']:g} s; "
        f"skopeo {sizes['layers']} layers of {sizes['layer_min'] // 1024}-{sizes['layer_max'] // 1024} KiB",
    ])


def preflight(wanted: list[str]) -> None:
    """Fail before minutes of measuring if a tool a chosen measurement needs is missing."""
    need = {"docker-registry": "docker-registry"}
    if "manifest" in wanted:
        need["wrk"] = "wrk"
    if "skopeo" in wanted:
        need["skopeo"] = "skopeo"
    missing = sorted(pkg for tool, pkg in need.items() if shutil.which(tool) is None)
    if missing:
        raise SystemExit(f"bench: missing tools; install them with: apt-get install {' '.join(missing)}")


def run(args) -> list[Metric]:
    preflight(args.measure)
    sizes = dict(QUICK if args.quick else FULL)
    if args.repeat:
        sizes["repeat"] = args.repeat
    reps = sizes["repeat"]
    log(header(sizes, args))
    load = os.getloadavg()[0]
    if load >= 1.0 and not args.quick:
        log(f"WARNING: load average {load:.2f} >= 1.0: other work is running, absolute numbers will be noisy")

    metrics = {
        "blob-get": Metric(f"Blob GET ({sizes['blob'] // MiB} MiB)", "MiB/s", True, 1.0),
        "blob-put": Metric(f"Blob monolithic PUT ({sizes['blob'] // MiB} MiB)", "MiB/s", True, 2.5),
        "first-get": Metric(f"Blob GET right after its PUT ({sizes['blob'] // MiB} MiB)", "MiB/s", True, 1.0),
        "chunked": Metric(f"Chunked upload ({sizes['chunked'] // MiB} MiB in {sizes['chunk'] // MiB} MiB PATCHes)",
                          "MiB/s", True),
        "rps": Metric(f"Manifest GET, {args.connections} connections", "req/s", True, 0.8),
        "p50": Metric("Manifest GET p50 latency", "ms", False),
        "p99": Metric("Manifest GET p99 latency", "ms", False),
        "push": Metric(f"skopeo push, {sizes['layers']} layers", "s", False, 1.0),
        "pull": Metric(f"skopeo pull, {sizes['layers']} layers", "s", False, 1.0),
    }
    # Server-side CPU time (all processes of each server), lower is better: where the time goes.
    cpu = {
        "blob-get": Metric("Blob GET", "s/GiB", False),
        "blob-put": Metric("Blob monolithic PUT", "s/GiB", False),
        "first-get": Metric("Blob GET right after its PUT", "s/GiB", False),
        "chunked": Metric("Chunked upload", "s/GiB", False),
        "rps": Metric("Manifest GET", "ms/req", False),
        "push": Metric("skopeo push", "s", False),
        "pull": Metric("skopeo pull", "s", False),
    }
    order = ["blob-get", "blob-put", "first-get", "chunked", "rps", "p50", "p99", "push", "pull"]

    with contextlib.ExitStack() as stack:
        root = tempfile.mkdtemp(prefix="angos-bench-", dir=args.tmpdir)
        stack.callback(shutil.rmtree, root, True)
        srv = {
            "angos": stack.enter_context(servers.Angos(root, workers=args.workers, direct_io=not args.buffered_uploads)),
            "distribution": stack.enter_context(servers.Distribution(root)),
        }
        log(f"angos on {srv['angos'].url}, distribution on {srv['distribution'].url}, data under {root}")
        wanted = args.measure
        blob = None
        if {"blob-put", "blob-get", "chunked"} & set(wanted):
            size = max(sizes["blob"], sizes["chunked"])
            log(f"writing {size // MiB} MiB of random data ...")
            blob = BlobFile(Path(root) / "blob.bin", size)
            stack.callback(blob.close)
        digest = None
        if "blob-put" in wanted:
            log("blob monolithic PUT")
            digest = blobs.measure_put(srv, blob, reps, metrics["blob-put"], cpu["blob-put"], log,
                                       args.recycle_memory, (metrics["first-get"], cpu["first-get"]))
        elif "blob-get" in wanted:
            log("blob upload for GET (not measured)")
            digest = blobs.measure_put(srv, blob, 1, Metric("setup", "MiB/s", True), None, lambda _m: None)
        if "blob-get" in wanted:
            log("blob GET")
            blobs.measure_get(srv, digest, blob.size, reps, metrics["blob-get"], cpu["blob-get"], log)
        if "chunked" in wanted:
            log("chunked upload")
            blobs.measure_chunked(srv, blob, sizes["chunked"], sizes["chunk"], reps, metrics["chunked"],
                                  cpu["chunked"], log, args.recycle_memory)
        if "manifest" in wanted:
            log("manifest GET (wrk)")
            manifests.measure(srv, args.connections, sizes["wrk_duration"], sizes["wrk_warmup"], reps,
                              threads=2, rps=metrics["rps"], p50=metrics["p50"], p99=metrics["p99"],
                              cpu=cpu["rps"], log=log)
        if "skopeo" in wanted:
            log("skopeo copy")
            skopeo.measure(srv, Path(root), sizes["layers"], sizes["layer_min"], sizes["layer_max"], reps,
                           metrics["push"], metrics["pull"], cpu["push"], cpu["pull"], log)

    shown = [metrics[k] for k in order if any(metrics[k].samples.values())]
    shown_cpu = [m for m in cpu.values() if any(m.samples.values())]
    log("")
    log("Samples:")
    for m in shown:
        log("  " + samples_line(m))
    for m in shown_cpu:
        log("  server CPU " + samples_line(m))
    log(f"Load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    log("")
    log(table(shown))
    if shown_cpu:
        log("")
        log("Server CPU time (user + system, all processes of the server; lower is better):")
        log("")
        log(table(shown_cpu))
    return shown


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
