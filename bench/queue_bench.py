"""Job queue benchmark: enqueue→start latency and trivial-job throughput.

Three set-ups, each on a fresh temporary directory:

- ``sqlite in-process``: ``angos server`` without ``[global.job_queue]`` (its
  supervised drain process runs the jobs);
- ``sqlite worker``: ``[global.job_queue] backend = "sqlite"`` and one
  ``angos worker``;
- ``redis worker``: ``backend = "redis"`` on a throwaway ``redis-server`` and
  one ``angos worker``.

This process is the producer (``JobQueue.submit`` on the same store). The job
kind ``bench.stamp`` (registered by this module, which the consumers import
through ``ANGOS_JOB_MODULES``) appends ``<enqueued at> <started at>`` to a file.

- latency: jobs submitted one at a time, 20 ms apart (an idle queue, so
  nothing waits behind another job); p50/p99 of start − submit;
- throughput: a burst of trivial jobs submitted as fast as one producer can;
  jobs/s = jobs / (last start − first submit), i.e. the sustained rate of
  the producer and consumer together; the median of three bursts.

Targets (issue 4): p50 ≤ 50 ms on SQLite, ≤ 10 ms on Redis; ≥ 500 jobs/s.
``main(["--quick"])`` is a smoke run with small counts.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from angos.queue.kinds import register

ROOT = Path(__file__).resolve().parent.parent
KIND = "bench.stamp"


def _stamp(job, ctx):
    started = time.time()
    fd = os.open(job.payload["out"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, f"{job.payload['t']} {started}\n".encode())
    finally:
        os.close(fd)


register(KIND, _stamp)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pdeathsig() -> None:
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)
    except OSError:
        pass


class Setup:
    def __init__(self, name: str, backend: str | None, command: str):
        self.name, self.backend, self.command = name, backend, command
        self.dir = Path(tempfile.mkdtemp(prefix="angos-qbench-"))
        self.procs: list[subprocess.Popen] = []

    def _spawn(self, argv, log: str) -> subprocess.Popen:
        env = dict(os.environ, ANGOS_JOB_MODULES="bench.queue_bench", ANGOS_LOG="warning",
                   PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
        p = subprocess.Popen(argv, cwd=self.dir, env=env, stdout=open(self.dir / log, "ab"), stderr=subprocess.STDOUT,
                             start_new_session=True, preexec_fn=_pdeathsig)
        self.procs.append(p)
        return p

    def __enter__(self):
        queue = ""
        if self.backend == "redis":
            port = _free_port()
            self._spawn(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                         "--appendonly", "no"], "redis.log")
            _wait(lambda: _connects(port))
            queue = f'[global.job_queue]\nbackend = "redis"\nurl = "redis://127.0.0.1:{port}/0"\n'
        elif self.backend == "sqlite":
            queue = '[global.job_queue]\nbackend = "sqlite"\n'
        self.port = _free_port()
        self.config = self.dir / "config.toml"
        self.config.write_text(textwrap.dedent(f"""\
            [server]
            bind_address = "127.0.0.1"
            port = {self.port}
            workers = 2
            [global.access_policy]
            default = "allow"
            """) + queue + f'[blob_store.fs]\nroot_dir = "{self.dir / "data"}"\n')
        angos = [sys.executable, "-m", "angos.cli", "-c", str(self.config)]
        self._spawn(angos + [self.command], f"{self.command}.log")
        from angos.config import load_config
        from angos.queue.core import JobQueue

        self.queue = JobQueue(load_config([str(self.config)]), "replication")
        # Ready when a probe job has run (the consumer has imported this module and polls).
        self.run([0.0], probe=True)
        return self

    def run(self, gaps: list[float], probe: bool = False) -> list[tuple[float, float]]:
        out = self.dir / f"stamps-{time.monotonic_ns()}.txt"
        for i, gap in enumerate(gaps):
            if gap:
                time.sleep(gap)
            self.queue.submit(KIND, f"{out.name}-{i}", {"out": str(out), "t": time.time()})
        _wait(lambda: out.exists() and len(out.read_text().splitlines()) >= len(gaps), 120 if not probe else 60)
        return [tuple(map(float, line.split())) for line in out.read_text().splitlines()]

    def __exit__(self, *exc):
        self.queue.close()
        for p in reversed(self.procs):
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
                try:
                    p.wait(30)
                except subprocess.TimeoutExpired:
                    os.killpg(p.pid, signal.SIGKILL)
                    p.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)


def _connects(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


def _wait(pred, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise RuntimeError("timed out")
        time.sleep(0.01)


def _pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def measure(setup: Setup, n_latency: int, n_burst: int) -> dict:
    stamps = setup.run([0.02] * n_latency)
    lat = [(start - t) * 1000 for t, start in stamps]
    rates = []
    for _ in range(3):  # median of three bursts: one stall of a shared machine should not decide the number
        burst = setup.run([0.0] * n_burst)
        first_submit = min(t for t, _ in burst)
        last_start = max(s for _, s in burst)
        rates.append(n_burst / (last_start - first_submit))
    return {"p50": statistics.median(lat), "p99": _pct(lat, 99), "rate": statistics.median(rates)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.queue_bench", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small counts (smoke run)")
    args = p.parse_args(argv)
    n_latency, n_burst = (20, 200) if args.quick else (200, 3000)
    rows = []
    for name, backend, command in (("sqlite in-process", None, "server"), ("sqlite worker", "sqlite", "worker"),
                                   ("redis worker", "redis", "worker")):
        if backend == "redis" and shutil.which("redis-server") is None:
            print("queue bench: redis-server is not installed; skipping the redis set-up", file=sys.stderr)
            continue
        with Setup(name, backend, command) as setup:
            r = measure(setup, n_latency, n_burst)
        target = 10 if backend == "redis" else 50
        rows.append((name, r, target))
        print(f"  {name}: p50 {r['p50']:.1f} ms, p99 {r['p99']:.1f} ms, {r['rate']:.0f} jobs/s", flush=True)
    print(f"\n| set-up | enqueue→start p50 | p99 | trivial jobs/s | targets |\n|---|---|---|---|---|")
    ok = True
    for name, r, target in rows:
        met = r["p50"] <= target and r["rate"] >= 500
        ok &= met
        print(f"| {name} | {r['p50']:.1f} ms | {r['p99']:.1f} ms | {r['rate']:.0f} | "
              f"p50 ≤ {target} ms, ≥ 500/s: {'met' if met else 'MISSED'} |")
    print(f"\n({n_latency} latency samples 20 ms apart; median of 3 bursts of {n_burst} jobs; "
          f"4 consumer threads per queue)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
