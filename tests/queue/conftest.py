"""Fixtures for the job queue tests: a queue configuration per backend and real worker processes.

- ``qenv`` (parametrised ``sqlite`` / ``redis`` / ``s3``): a fresh data directory and a
  config with ``[global.job_queue]`` (Redis: a real ``redis-server`` on a free
  loopback port). ``qenv.queue(name)`` opens a :class:`JobQueue` in the test
  process (producer side); ``qenv.worker(...)`` starts ``angos worker``.
- ``s3``: an S3 metadata store on moto (a fresh bucket) and *no* ``[global.job_queue]``,
  the server's in-process mode, whose jobs live in the bucket (:mod:`angos.queue.s3_store`).
  ``qenv.worker(...)`` then starts ``angos worker --in-process`` (the server's drain)
  and ``$ANGOS_JOBS_DIR`` points into the test's directory. Without the section the
  drain uses the queue defaults, so the queue settings a test passes to ``configure``
  apply to ``qenv.queue()`` (the producer: ``max_attempts`` travels in each envelope;
  backoff applies where the test calls ``run_next`` itself). Tests that are about
  ``[global.job_queue]`` itself are skipped for s3 (:data:`S3_SKIPS`, with the reason).
- ``Producer(qenv, kind, lock_key, payload, ...)``: a producer in a process of its own
  (:mod:`tests.queue.produce`), e.g. with another box's ``ANGOS_JOBS_DIR``.
- Job kinds come from :mod:`tests.queue.jobkinds`, loaded by worker and server
  processes through ``ANGOS_JOB_MODULES`` with the repository on ``PYTHONPATH``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from angos.config import load_config, load_config_text
from angos.queue.core import JobQueue
from tests.conftest import ANGOS, ROOT, make_bucket, wait_for

import tests.queue.jobkinds  # noqa: F401 - registers the test job kinds in this process too

JOB_ENV = {"ANGOS_JOB_MODULES": "tests.queue.jobkinds",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}



def read_lines(path: Path) -> list[list[str]]:
    return [line.split() for line in path.read_text().splitlines()] if path.exists() else []


class Worker:
    """``angos worker`` as a process; ``env`` adds to the test's environment (e.g. another box's
    ``ANGOS_JOBS_DIR``); ``wrap`` is a command the worker runs under (e.g. :data:`OTHER_HOST`)."""

    def __init__(self, qenv: "QueueEnv", args: list[str], env: dict | None = None, wrap: list[str] = ()):
        self.log_path = qenv.dir / f"worker-{time.monotonic_ns()}.log"
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([*wrap, *ANGOS, "-c", str(qenv.config_path), "worker", *args], cwd=qenv.dir,
                                     stdout=self._log, stderr=subprocess.STDOUT,
                                     env=dict(os.environ, **JOB_ENV, **(env or {})), start_new_session=True)

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


class Producer:
    """``python -m tests.queue.produce`` (see that module): a producer process of its own box."""

    def __init__(self, qenv: "QueueEnv", kind: str, lock_key: str, payload: dict, *options: str,
                 env: dict | None = None):
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.queue.produce", str(qenv.config_path), kind,
                                      lock_key, json.dumps(payload), *options], cwd=ROOT, text=True,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     env=dict(os.environ, **JOB_ENV, **(env or {})), start_new_session=True)
        qenv.producers.append(self)
        line = self.proc.stdout.readline()
        if line.strip() != "ready":
            raise AssertionError(f"producer did not start: {line!r} {self.proc.stderr.read()}")

    def results(self, timeout: float = 60) -> list[bool]:
        """Wait for the producer to finish; what each submit returned."""
        out, err = self.proc.communicate(timeout=timeout)
        assert self.proc.returncode == 0, err
        return [line.split()[1] == "True" for line in out.splitlines() if line.startswith("submitted ")]

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()


# A worker "on another host" as far as the queue can tell: its own hostname (UTS namespace) and PID
# namespace, so the owner string of its jobs names another machine and no worker here can look its
# process up (the same-host shortcut for dead owners does not apply). Needs root, as the tests run.
OTHER_HOST = ["bwrap", "--dev-bind", "/", "/", "--unshare-uts", "--hostname", "angos-other-host", "--unshare-pid",
              "--proc", "/proc", "--die-with-parent", "--"]


S3_SKIPS = {
    "test_queue_depth_gauges_appear_on_metrics":
        "the queue-depth gauges are published only with [global.job_queue]; the in-process S3 mode has none",
}


class QueueEnv:
    def __init__(self, directory: Path, backend: str, redis_url: str | None, s3: tuple[str, str] | None = None):
        self.dir = directory
        self.backend = backend
        self.redis_url = redis_url
        self.s3 = s3  # (endpoint, bucket) for the s3 backend
        self.job_queue = ""
        self.data = directory / "data"
        self.out = directory / "out"
        self.out.mkdir()
        self.config_path = directory / "config.toml"
        self.workers: list[Worker] = []
        self.producers: list[Producer] = []
        self._queues: list[JobQueue] = []
        self.configure()

    @staticmethod
    def _common(port: int) -> str:
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

            """)

    def config_text(self, job_queue: str = "", port: int = 1, extra: str = "") -> str:
        if self.backend == "s3":
            return self._s3_config_text(port, extra)
        backend = f'backend = "redis"\nurl = "{self.redis_url}"' if self.backend == "redis" else 'backend = "sqlite"'
        return (self._common(port) + "[global.job_queue]\n" + backend + "\n" + textwrap.dedent(job_queue)
                + f'\n[blob_store.fs]\nroot_dir = "{self.data}"\n' + textwrap.dedent(extra))

    def _s3_config_text(self, port: int, extra: str) -> str:
        endpoint, bucket = self.s3
        store = f'endpoint = "{endpoint}"\nbucket = "{bucket}"\naccess_key_id = "test"\nsecret_key = "test"\n'
        return (self._common(port) + "[blob_store.s3]\n" + store + 'key_prefix = "blobs"\n\n[metadata_store.s3]\n'
                + store + 'key_prefix = "meta"\n\n[metadata_store.s3.lock_strategy.s3]\n' + textwrap.dedent(extra))

    def configure(self, job_queue: str = "", port: int = 1, extra: str = "") -> None:
        self.job_queue = job_queue
        self.config_path.write_text(self.config_text(job_queue, port, extra))

    def _producer_settings(self):
        """The ``[global.job_queue]`` settings a test asked for, for the s3 producer (see module docstring)."""
        text = (f'[server]\nbind_address = "127.0.0.1"\n[global.job_queue]\n{textwrap.dedent(self.job_queue)}\n'
                f'[blob_store.fs]\nroot_dir = "{self.data}"\n')
        return load_config_text(text).global_.job_queue

    @property
    def cfg(self):
        return load_config([str(self.config_path)])

    def queue(self, name: str = "replication") -> JobQueue:
        q = JobQueue(self.cfg, name)
        if self.backend == "s3" and self.job_queue.strip():
            q.qcfg = self._producer_settings()
        self._queues.append(q)
        return q

    def worker(self, *args: str, env: dict | None = None, wrap: list[str] = (), ready: bool = True) -> Worker:
        w = Worker(self, (["--in-process"] if self.backend == "s3" else []) + list(args), env, wrap)
        self.workers.append(w)
        # Up before the test goes on: a test can be done before a slow-starting worker is (the
        # other worker, or the S3 mode's server drain, ran every job), and a SIGTERM that lands
        # while the interpreter is still starting kills it (-15) instead of stopping it.
        # ``ready=False`` for a worker that may die running a job before it logs that it drains.
        if ready:
            wait_for(lambda: "draining " in w.logs(), what="the worker to start draining")
        return w

    def close(self) -> None:
        for w in self.workers:
            w.kill()
        for p in self.producers:
            p.kill()
        for q in self._queues:
            q.close()


@pytest.fixture(params=["sqlite", "redis", "s3"])
def qenv(request, tmp_path, monkeypatch):
    if request.param == "s3" and request.node.originalname in S3_SKIPS:
        pytest.skip(S3_SKIPS[request.node.originalname])
    redis_url = request.getfixturevalue("redis_server") if request.param == "redis" else None
    s3 = None
    if request.param == "s3":
        endpoint = request.getfixturevalue("moto_server")
        s3 = (endpoint, make_bucket(endpoint))
        # This box's wake-ups (inherited by the workers and servers the test starts), never ./_jobs.
        (tmp_path / "box").mkdir()
        monkeypatch.setenv("ANGOS_JOBS_DIR", str(tmp_path / "box" / "_jobs"))
    env = QueueEnv(tmp_path, request.param, redis_url, s3)
    yield env
    env.close()
