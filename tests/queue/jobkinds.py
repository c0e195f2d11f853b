"""Job kinds used only by the queue tests.

Worker and server processes load this module through
``ANGOS_JOB_MODULES=tests.queue.jobkinds`` (with the repository root on
``PYTHONPATH``). Every kind records what it did as lines appended to files
under ``payload["dir"]`` so the test process can check order, attempts and
overlap without sharing memory with the worker.
"""

from __future__ import annotations

import os
import signal
import time

from prometheus_client import Counter

from angos.queue.kinds import TerminalJobError, job_kind

TEST_RUNS = Counter("angos_test_job_runs_total", "Runs of the test job kind 'test.metric'")


def _append(path: str, line: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def _log(job, name: str | None = None) -> str:
    return os.path.join(job.payload["dir"], (name or job.payload.get("name") or job.lock_key) + ".log")


@job_kind("test.record")
def record(job, ctx):
    """Append ``start``/``end`` lines (with pid and time) around an optional sleep."""
    path = _log(job)
    _append(path, f"start {time.time():.6f} {os.getpid()} {job.id}")
    if job.payload.get("sleep"):
        time.sleep(job.payload["sleep"])  # the job's duration, as the test asked for
    _append(path, f"end {time.time():.6f} {os.getpid()} {job.id}")


@job_kind("test.gate")
def gate(job, ctx):
    """Record a start, then wait until the file ``<dir>/<name>.go`` exists, then record the end."""
    path = _log(job)
    _append(path, f"start {time.time():.6f} {os.getpid()} {job.id}")
    go = os.path.join(job.payload["dir"], job.payload["name"] + ".go")
    while not os.path.exists(go):
        time.sleep(0.02)  # the job runs until the test releases it
    _append(path, f"end {time.time():.6f} {os.getpid()} {job.id}")


@job_kind("test.flaky")
def flaky(job, ctx):
    """Fail (retryably, or terminally) until ``succeed_after`` attempts have failed, or until the file
    ``fixed_by`` exists; log each attempt."""
    path = _log(job)
    _append(path, f"attempt {time.time():.6f} {job.attempts}")
    if job.payload.get("terminal"):
        raise TerminalJobError("refused for good")
    fixed = job.payload.get("fixed_by")
    if fixed is not None and not os.path.exists(fixed):
        raise RuntimeError(f"boom {job.attempts}")
    if fixed is None and job.attempts < job.payload.get("succeed_after", 1 << 30):
        raise RuntimeError(f"boom {job.attempts}")
    _append(path, f"done {time.time():.6f} {job.attempts}")


@job_kind("test.metric")
def metric(job, ctx):
    TEST_RUNS.inc()
    _append(_log(job), f"done {time.time():.6f} {os.getpid()}")


@job_kind("test.config")
def config(job, ctx):
    """Record the repositories the draining process's current configuration declares."""
    _append(_log(job), " ".join(["repos", *sorted(ctx.cfg.repository)]))


@job_kind("test.hold")
def hold(job, ctx):
    """Record ``start <time> <pid> <attempts>``, then wait for ``<dir>/<name>.go`` and record ``end``."""
    path = _log(job)
    _append(path, f"start {time.time():.6f} {os.getpid()} {job.attempts}")
    go = os.path.join(job.payload["dir"], job.payload["name"] + ".go")
    while not os.path.exists(go):
        time.sleep(0.02)  # the job runs until the test releases it
    _append(path, f"end {time.time():.6f} {os.getpid()} {job.attempts}")


@job_kind("test.suicide")
def suicide(job, ctx):
    """Record ``attempt <time> <pid> <attempts>``, then SIGKILL the process running it: every time."""
    _append(_log(job), f"attempt {time.time():.6f} {os.getpid()} {job.attempts}")
    os.kill(os.getpid(), signal.SIGKILL)


@job_kind("test.fail_with")
def fail_with(job, ctx):
    """Fail for good with ``payload["error"]`` as the message (what an error page must show and escape)."""
    raise TerminalJobError(job.payload["error"])
