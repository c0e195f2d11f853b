"""Replication status benchmarks (``python -m bench --only status``; ``--quick`` for a smoke run).

1. **Wait overhead on replication latency.** A replicates to B (SQLite queue,
   in-process drain). For each of N sequential pushes of a small image, the
   time from A's answer to the manifest PUT until the tag resolves on B (HEAD
   polled every 2 ms): first with nobody waiting, then with a
   ``?wait=60s`` request for that very tag sent as soon as the push is
   answered, beside 100 idle waiters on another tag. Prints p50/p99 of both
   and of the waiter's own answer (push answered → waiter answered 200).
2. **Idle waiters.** 1,000 ``?wait=300s`` requests, each on its own
   connection, for a tag whose job never runs (held queue: ``[global.job_queue]``
   and no worker), against a server with one worker process. Prints that
   process's RSS (``VmRSS``) before and with the waiters in flight, the cost
   per waiter, and the CPU it spends over 30 s of them waiting (their only
   work is the re-check every ``RECHECK_SECS``).

Everything listens on 127.0.0.1 and is cleaned up on exit or Ctrl-C.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.replication_bench import Procs, _layer, push_image, resolves  # noqa: E402 - after sys.path
from bench.servers import free_port, wait_url  # noqa: E402


def _server(procs: Procs, name: str, downstream: str | None, extra: str = "", workers: int = 2) -> tuple[str, int]:
    port = free_port()
    text = (f'[server]\nbind_address = "127.0.0.1"\nport = {port}\nworkers = {workers}\n'
            f'max_connections_per_ip = 4000\n\n[global]\nmax_concurrent_requests = 4000\n\n'
            f'[blob_store.fs]\nroot_dir = "{procs.tmp / name}"\n\n'
            f'[repository."bench"]\n[repository."bench".access_policy]\ndefault = "allow"\n')
    if downstream:
        text += f'[[repository."bench".downstream]]\nname = "peer"\nurl = "{downstream}"\n'
    cfg = procs.tmp / f"{name}.toml"
    cfg.write_text(text + extra)
    p = procs.spawn([sys.executable, "-m", "angos.cli", "-c", str(cfg), "server"], f"{name}.log")
    url = f"http://127.0.0.1:{port}"
    wait_url(url + "/healthz", p)
    return url, p.pid


def _pctl(samples: list[float]) -> tuple[float, float]:
    s = sorted(samples)
    return statistics.median(s), s[min(len(s) - 1, int(len(s) * 0.99))]


def _open_waiters(port: int, path: str, n: int) -> list[socket.socket]:
    """``n`` connections, each with one long-poll request sent and never read."""
    req = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()
    out = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.sendall(req)
        out.append(s)
    return out


def _in_flight(url: str) -> float:
    for line in requests.get(url + "/metrics", timeout=10).text.splitlines():
        if line.startswith("http_requests_in_flight "):
            return float(line.split()[1])
    return 0.0


def _until(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.05)


def latency(procs: Procs, n: int, idle: int = 100) -> dict:
    b, _ = _server(procs, "lat-b", None)
    # A second repository replicates to B on reconcile only: its tags stay pending, so waiters on
    # one of them wait for the whole run.
    quiet = (f'\n[repository."quiet"]\n[repository."quiet".access_policy]\ndefault = "allow"\n'
             f'[[repository."quiet".downstream]]\nname = "peer"\nurl = "{b}"\nmode = "reconcile-only"\n')
    a, _ = _server(procs, "lat-a", b, quiet)
    sa, sb = requests.Session(), requests.Session()
    port = int(a.rsplit(":", 1)[1])

    def run(label: str, with_waiter: bool) -> dict:
        arrivals, answers = [], []
        for i in range(n):
            tag = f"{label}{i}"
            d = push_image(sa, a, "bench/lat", tag, [_layer(256)])
            t0 = time.perf_counter()
            answer = {}
            if with_waiter:
                def wait(tag=tag):
                    with requests.Session() as s:
                        r = s.get(f"{a}/_ext/bench/lat/_replication/{tag}", params={"wait": "60s"}, timeout=90)
                    answer["t"], answer["status"] = time.perf_counter(), r.status_code
                waiter = threading.Thread(target=wait)
                waiter.start()
            while not resolves(sb, b, "bench/lat", tag, d):
                if time.perf_counter() - t0 > 30:
                    raise RuntimeError(f"{tag} never reached B")
                time.sleep(0.002)
            arrivals.append((time.perf_counter() - t0) * 1000)
            if with_waiter:
                waiter.join(90)
                if answer.get("status") != 200:
                    raise RuntimeError(f"the waiter for {tag} answered {answer.get('status')}")
                answers.append((answer["t"] - t0) * 1000)
        out = {"arrival_p50_ms": _pctl(arrivals)[0], "arrival_p99_ms": _pctl(arrivals)[1]}
        if answers:
            out.update(waiter_p50_ms=_pctl(answers)[0], waiter_p99_ms=_pctl(answers)[1])
        return out

    push_image(sa, a, "quiet/app", "v1", [_layer(256)])
    without = run("plain", False)
    socks = _open_waiters(port, "/_ext/quiet/app/_replication/v1?wait=300s", idle)
    try:
        _until(lambda: _in_flight(a) >= idle + 1, 60, f"{idle} idle waiters in flight")
        with_waiter = run("waited", True)
    finally:
        for s in socks:
            s.close()
    return {"n": n, "idle": idle, "without": without, "with": with_waiter}


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def _cpu_secs(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    return [int(p) for p in out]


def idle_waiters(procs: Procs, n: int, settle: float) -> dict:
    held = "\n[global.job_queue]\nmax_attempts = 5\n"
    a, master = _server(procs, "idle-a", "http://127.0.0.1:9", held, workers=1)
    port = int(a.rsplit(":", 1)[1])
    s = requests.Session()
    push_image(s, a, "bench/app", "v1", [_layer(256)])
    (worker,) = _children(master)
    # Warm the worker: the status route, the waiters' hub and its socket exist before measuring.
    r = s.get(f"{a}/_ext/bench/app/_replication/v1", params={"wait": "0.1"}, timeout=30)
    assert r.status_code == 202, r.text
    time.sleep(1.0)  # let the warm-up's garbage settle before the baseline is read
    before = _rss_kib(worker)
    socks = _open_waiters(port, "/_ext/bench/app/_replication/v1?wait=300s", n)
    try:
        _until(lambda: _in_flight(a) >= n + 1, 120, f"{n} waiters in flight")
        with_them = _rss_kib(worker)
        cpu0, t0 = _cpu_secs(worker), time.monotonic()
        time.sleep(settle)  # the measurement window: the waiters just wait
        cpu = _cpu_secs(worker) - cpu0
        elapsed = time.monotonic() - t0
        pulled = s.get(f"{a}/v2/bench/app/manifests/v1",
                       headers={"Accept": "application/vnd.oci.image.manifest.v1+json"}, timeout=10)
    finally:
        for sock in socks:
            sock.close()
    return {"waiters": n, "rss_before_mib": before / 1024, "rss_with_mib": with_them / 1024,
            "per_waiter_kib": (with_them - before) / n, "cpu_percent": 100 * cpu / elapsed,
            "pull_while_waiting": pulled.status_code}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench --only status")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--pushes", type=int, default=None)
    p.add_argument("--waiters", type=int, default=None)
    args = p.parse_args(argv)
    pushes = args.pushes or (5 if args.quick else 50)
    waiters = args.waiters or (50 if args.quick else 1000)
    procs = Procs()
    try:
        lat = latency(procs, pushes)
        print(f"push -> arrival on B over {lat['n']} pushes: p50 {lat['without']['arrival_p50_ms']:.1f} ms, "
              f"p99 {lat['without']['arrival_p99_ms']:.1f} ms without a waiter; "
              f"p50 {lat['with']['arrival_p50_ms']:.1f} ms, p99 {lat['with']['arrival_p99_ms']:.1f} ms with one "
              f"(and {lat['idle']} idle ones)")
        print(f"push -> waiter answered 200: p50 {lat['with']['waiter_p50_ms']:.1f} ms, "
              f"p99 {lat['with']['waiter_p99_ms']:.1f} ms")
        idle = idle_waiters(procs, waiters, 5.0 if args.quick else 30.0)
        print(f"{idle['waiters']} idle waiters on one worker: RSS {idle['rss_before_mib']:.1f} MiB -> "
              f"{idle['rss_with_mib']:.1f} MiB ({idle['per_waiter_kib']:.1f} KiB each); "
              f"CPU {idle['cpu_percent']:.1f}% while they wait; a pull meanwhile answered {idle['pull_while_waiting']}")
    finally:
        procs.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
