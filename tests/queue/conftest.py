"""Fixtures for the job queue tests: a queue configuration per backend and real worker processes.

- ``qenv`` (parametrised ``sqlite`` / ``redis``): a fresh data directory and a
  config with ``[global.job_queue]`` (Redis: a real ``redis-server`` on a free
  loopback port). ``qenv.queue(name)`` opens a :class:`JobQueue` in the test
  process (producer side); ``qenv.worker(...)`` starts ``angos worker``.
- Job kinds come from :mod:`tests.queue.jobkinds`, loaded by worker and server
  processes through ``ANGOS_JOB_MODULES`` with the repository on ``PYTHONPATH``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import textwrap
import time
from pathlib import Path

import pytest

from angos.config import load_config
from angos.queue.core import JobQueue
from tests.conftest import ANGOS, ROOT

import tests.queue.jobkinds  # noqa: F401 - registers the test job kinds in this process too

JOB_ENV = {"ANGOS_JOB_MODULES": "tests.queue.jobkinds",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}


def wait_until(predicate, timeout: float = 30.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def read_lines(path: Path) -> list[list[str]]:
    return [line.split() for line in path.read_text().splitlines()] if path.exists() else []


class Worker:
    def __init__(self, qenv: "QueueEnv", args: list[str]):
        self.log_path = qenv.dir / f"worker-{time.monotonic_ns()}.log"
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(ANGOS + ["-c", str(qenv.config_path), "worker", *args], cwd=qenv.dir,
                                     stdout=self._log, stderr=subprocess.STDOUT, env=dict(os.environ, **JOB_ENV),
                                     start_new_session=True)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self, sig=signal.SIGTERM, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"worker did not stop within {timeout}s:\n{self.logs()}")

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")


class QueueEnv:
    def __init__(self, directory: Path, backend: str, redis_url: str | None):
        self.dir = directory
        self.backend = backend
        self.redis_url = redis_url
        self.data = directory / "data"
        self.out = directory / "out"
        self.out.mkdir()
        self.config_path = directory / "config.toml"
        self.workers: list[Worker] = []
        self._queues: list[JobQueue] = []
        self.configure()

    def config_text(self, job_queue: str = "", port: int = 1, extra: str = "") -> str:
        backend = f'backend = "redis"\nurl = "{self.redis_url}"' if self.backend == "redis" else 'backend = "sqlite"'
        return textwrap.dedent(f"""\
            [server]
            bind_address = "127.0.0.1"
            port = {port}
            workers = 2

            [global]
            max_concurrent_replication_jobs = 4
            max_concurrent_cache_jobs = 2

            [global.access_policy]
            default = "allow"

            [global.job_queue]
            """) + backend + "\n" + textwrap.dedent(job_queue) + textwrap.dedent(f"""
            [blob_store.fs]
            root_dir = "{self.data}"
            """) + textwrap.dedent(extra)

    def configure(self, job_queue: str = "", port: int = 1, extra: str = "") -> None:
        self.config_path.write_text(self.config_text(job_queue, port, extra))

    @property
    def cfg(self):
        return load_config([str(self.config_path)])

    def queue(self, name: str = "replication") -> JobQueue:
        q = JobQueue(self.cfg, name)
        self._queues.append(q)
        return q

    def worker(self, *args: str) -> Worker:
        w = Worker(self, list(args))
        self.workers.append(w)
        return w

    def close(self) -> None:
        for w in self.workers:
            w.kill()
        for q in self._queues:
            q.close()


@pytest.fixture(params=["sqlite", "redis"])
def qenv(request, tmp_path):
    redis_url = request.getfixturevalue("redis_server") if request.param == "redis" else None
    env = QueueEnv(tmp_path, request.param, redis_url)
    yield env
    env.close()
