"""Shared fixtures: real servers on 127.0.0.1 with free ports.

- ``angos_factory(extra_toml="", workers=2, ...)`` starts ``angos server`` as a
  real process (gunicorn + gevent) on a fresh data directory and returns an
  :class:`AngosServer`; every server is stopped at teardown.
- ``angos``: one shared server (2 workers, allow-all) for protocol tests.
- ``docker_registry_factory()``: CNCF Distribution (Debian ``docker-registry``)
  with filesystem storage, as a third-party peer.
- ``redis_server``: a throwaway ``redis-server``'s URL; ``redis_process`` the same server as a
  :class:`RedisProc` a test can stop and start again.
- ``skopeo(*args)``: run skopeo against loopback registries (TLS off).
- ``tree_snapshot(root)`` / ``snapshot_diff``: byte-for-byte views of a store, to show that a
  refused request changed nothing.
- ``wait_for(predicate, timeout=..., what=...)``: the one poll helper; returns the first
  truthy value ``predicate()`` gives and raises with the last value it saw on timeout.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parent.parent
ANGOS = [sys.executable, "-m", "angos.cli"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout: float = 30.0, interval: float = 0.05, what: str | None = None):
    """Poll ``predicate`` until it returns something truthy and return that value.

    On timeout raise AssertionError naming ``what`` (or the predicate) and the last
    value seen, so a failure says what the test was looking at, not just "timed out".
    Callers may still write ``assert wait_for(...)``: a value that comes back is truthy.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            shown = repr(value)
            if len(shown) > 2000:
                shown = shown[:2000] + "..."
            raise AssertionError(f"timed out after {timeout}s waiting for {what or _describe(predicate)}; "
                                 f"last saw {shown}")
        time.sleep(interval)  # the poll interval: how often the condition is looked at


def _describe(predicate) -> str:
    code = getattr(predicate, "__code__", None)
    if code is None:
        return repr(predicate)
    return f"{getattr(predicate, '__qualname__', 'predicate')} ({os.path.basename(code.co_filename)}:{code.co_firstlineno})"


def chattr(flag: str, *paths: Path) -> None:
    """``chattr +i`` / ``-i``: make files immutable, which stops root too (file modes do not; the
    tests run as root). Fails the test where the file system has no such attribute."""
    res = subprocess.run(["chattr", flag, *map(str, paths)], capture_output=True, text=True)
    if res.returncode != 0:
        pytest.fail(f"chattr {flag} failed ({res.stderr.strip()}): this test needs a file system with the "
                    "immutable attribute (ext4, xfs, btrfs) under pytest's temporary directory")


def tree_snapshot(root: Path, skip_dirs=("_locks", "_jobs"), skip=lambda rel: False) -> dict[str, str]:
    """``{relative path: sha256 of the content}`` of every file under ``root``: two equal
    snapshots mean byte-identical trees. Lock files, the job queue and in-flight temporaries
    (``.tmp-``) are left out: they change on reads too."""
    import hashlib

    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in skip_dirs]
        rel_dir = os.path.relpath(dirpath, root)
        for name in filenames:
            rel = os.path.normpath(os.path.join(rel_dir, name))
            if ".tmp-" in name or skip(rel):
                continue
            with open(os.path.join(dirpath, name), "rb") as fh:
                out[rel] = hashlib.sha256(fh.read()).hexdigest()
    return out


def snapshot_diff(before: dict, after: dict) -> dict:
    """What :func:`tree_snapshot` ``after`` has that ``before`` had not (for assertion messages)."""
    return {"added": sorted(set(after) - set(before)), "removed": sorted(set(before) - set(after)),
            "changed": sorted(k for k in after if k in before and after[k] != before[k])}


def wait_http(url: str, proc: subprocess.Popen | None = None, timeout: float = 60.0, ok=(200, 401)) -> None:
    # A generous deadline: it only matters when a server is slow to boot, which on a loaded 2-core
    # machine (the suite beside other work) took longer than the 20 s this used to allow. A server
    # that dies is noticed at once (proc.poll), not at the deadline.
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before {url} answered")
        try:
            # Connection: close, so no idle keep-alive connection outlives the probe
            # (one would hold a gevent worker through its whole graceful stop).
            with requests.get(url, timeout=1, headers={"Connection": "close"}) as r:
                if r.status_code in ok:
                    return
                last = r.status_code
        except requests.RequestException as exc:
            last = repr(exc)  # not the exception: its traceback would keep the socket open
        time.sleep(0.05)  # the poll interval while the server starts
    raise RuntimeError(f"{url} did not come up: {last}")


class AngosServer:
    """A running ``angos server`` process."""

    def __init__(self, workdir: Path, config_text: str, port: int, env: dict | None = None):
        self.workdir = workdir
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.host = f"127.0.0.1:{port}"
        self.config_path = workdir / "config.toml"
        self.config_path.write_text(config_text)
        self.log_path = workdir / "server.log"
        self.env = dict(os.environ, **(env or {}))
        self.proc: subprocess.Popen | None = None

    def start(self, wait: bool = True) -> "AngosServer":
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(ANGOS + ["-c", str(self.config_path), "server"], cwd=self.workdir,
                                     stdout=self._log, stderr=subprocess.STDOUT, env=self.env,
                                     start_new_session=True)
        if wait:
            wait_http(self.url + "/healthz", self.proc)
        return self

    @property
    def pid(self) -> int:
        return self.proc.pid

    def worker_pids(self) -> list[int]:
        """The gunicorn worker processes (not the in-process job drain, also a child of the master)."""
        out = subprocess.run(["pgrep", "-P", str(self.pid)], capture_output=True, text=True).stdout
        pids = []
        for p in out.split():
            try:
                cmdline = Path(f"/proc/{p}/cmdline").read_bytes()
            except OSError:
                continue
            if b"--in-process" not in cmdline:
                pids.append(int(p))
        return pids

    def stop(self, sig=signal.SIGTERM, timeout: float = 30) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return None

    def kill(self) -> None:
        """SIGKILL the whole process group (master and workers), as a crash would."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def v2(self, path: str) -> str:
        return f"{self.url}/v2/{path}"


def angos_config(data_dir: Path, port: int, workers: int = 2, extra: str = "", policy: str = "allow") -> str:
    return textwrap.dedent(f"""\
        [server]
        bind_address = "127.0.0.1"
        port = {port}
        workers = {workers}

        [global.access_policy]
        default = "{policy}"

        [blob_store.fs]
        root_dir = "{data_dir}"
        """) + textwrap.dedent(extra)


@pytest.fixture
def angos_factory(tmp_path_factory):
    servers: list[AngosServer] = []

    def make(extra: str = "", workers: int = 2, config_text: str | None = None, start: bool = True,
             env: dict | None = None, policy: str = "allow") -> AngosServer:
        workdir = tmp_path_factory.mktemp("angos")
        port = free_port()
        text = config_text if config_text is not None else angos_config(workdir / "data", port, workers, extra,
                                                                         policy)
        server = AngosServer(workdir, text.replace("@PORT@", str(port)).replace("@DATA@", str(workdir / "data")),
                             port, env)
        servers.append(server)
        if start:
            server.start()
        return server

    yield make
    stop_all(servers)


def stop_all(servers, timeout: float = 10) -> None:
    """Stop servers in parallel: signal every one, then wait (a graceful stop takes seconds each)."""
    for s in servers:
        if s.proc is not None and s.proc.poll() is None:
            s.proc.send_signal(signal.SIGTERM)
    for s in servers:
        s.stop(timeout=timeout)


@pytest.fixture(scope="session")
def angos(tmp_path_factory):
    """One shared allow-all server with 2 gunicorn workers."""
    workdir = tmp_path_factory.mktemp("angos-shared")
    port = free_port()
    server = AngosServer(workdir, angos_config(workdir / "data", port, 2), port).start()
    yield server
    server.stop(timeout=10)


class DockerRegistry:
    def __init__(self, workdir: Path, port: int, extra_yaml: str = ""):
        self.workdir = workdir
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.host = f"127.0.0.1:{port}"
        self.config_path = workdir / "config.yml"
        self.config_path.write_text(textwrap.dedent(f"""\
            version: 0.1
            log:
              level: warn
            storage:
              filesystem:
                rootdirectory: {workdir / 'data'}
              delete:
                enabled: true
            http:
              addr: 127.0.0.1:{port}
            """) + textwrap.dedent(extra_yaml))
        self.proc = None

    def start(self) -> "DockerRegistry":
        self._log = open(self.workdir / "registry.log", "ab")
        self.proc = subprocess.Popen(["docker-registry", "serve", str(self.config_path)], stdout=self._log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        wait_http(self.url + "/v2/", self.proc)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


@pytest.fixture
def scripted():
    """Makes :class:`tests.scripted.Scripted` HTTP servers (started); stops them after the test."""
    from .scripted import Scripted

    made: list[Scripted] = []

    def make() -> Scripted:
        made.append(Scripted().start())
        return made[-1]

    yield make
    for server in made:
        server.stop()


@pytest.fixture
def docker_registry_factory(tmp_path_factory):
    if shutil.which("docker-registry") is None:
        pytest.fail("docker-registry is not installed (make test installs it)")
    regs: list[DockerRegistry] = []

    def make(extra_yaml: str = "", users: dict[str, str] | None = None, tokens=None) -> DockerRegistry:
        """``users`` (name: password): every request needs one of them, by Basic auth (htpasswd).
        ``tokens`` (a tests.replication.token_server.TokenServer): every request needs a token it issued."""
        workdir = tmp_path_factory.mktemp("distribution")
        if tokens is not None:
            bundle = workdir / "issuer.pem"
            bundle.write_bytes(tokens.cert_pem())
            extra_yaml = (f"auth:\n  token:\n    realm: {tokens.url}\n    service: {tokens.service}\n"
                          f"    issuer: {tokens.issuer}\n    rootcertbundle: {bundle}\n") + textwrap.dedent(extra_yaml)
        elif users:
            htpasswd = workdir / "htpasswd"
            htpasswd.write_text("".join(
                subprocess.run(["htpasswd", "-Bbn", name, password], capture_output=True, text=True,
                               check=True).stdout.strip() + "\n" for name, password in users.items()))
            extra_yaml = f"auth:\n  htpasswd:\n    realm: test\n    path: {htpasswd}\n" + textwrap.dedent(extra_yaml)
        reg = DockerRegistry(workdir, free_port(), extra_yaml)
        regs.append(reg)
        return reg.start()

    yield make
    for r in regs:
        r.stop()


class RedisProc:
    """A ``redis-server`` on a free loopback port that can be stopped and started again on the same
    port; ``durable`` keeps its data across that (append-only file, fsync always), like a Redis
    restart in production."""

    def __init__(self, workdir: Path, durable: bool = False):
        self.port = free_port()
        self.workdir = workdir
        self.durable = durable
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc = None

    def start(self) -> "RedisProc":
        persistence = ["--appendonly", "yes", "--appendfsync", "always"] if self.durable else ["--appendonly", "no"]
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", *persistence,
             "--dir", str(self.workdir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        wait_for(lambda: _accepts(self.port), timeout=10, interval=0.05, what="redis-server to listen")
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # a clean shutdown flushes the append-only file
            self.proc.wait(10)


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


@pytest.fixture
def redis_process(tmp_path_factory):
    """A :class:`RedisProc` (started) that the test may stop and start."""
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is not installed (make test installs it)")
    redis = RedisProc(tmp_path_factory.mktemp("redis")).start()
    yield redis
    redis.stop()


@pytest.fixture
def redis_server(redis_process):
    """The URL of a throwaway ``redis-server``."""
    return redis_process.url


def skopeo(*args: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess:
    cmd = ["skopeo", "--insecure-policy", *args]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if check and res.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({res.returncode}):\n{res.stderr}")
    return res


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory):
    """A real S3 API (moto's server mode) on loopback; yields its endpoint URL.

    Shared per session: tests isolate themselves with their own bucket or key prefix.
    """
    exe = Path(sys.executable).parent / "moto_server"
    if not exe.exists():
        pytest.fail("moto_server is not installed (pip install -e '.[test]')")
    port = free_port()
    log = open(tmp_path_factory.mktemp("moto") / "moto.log", "ab")
    proc = subprocess.Popen([str(exe), "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/moto-api/", proc, timeout=30)
    yield url
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


def s3_source_config(endpoint: str, bucket: str, downstream_url: str, downstream_extra: str = "") -> str:
    """A one-worker, allow-all server storing everything in ``bucket`` on ``endpoint`` (key prefix
    ``reg``), whose repository ``nginx`` replicates to ``downstream_url`` as downstream ``peer``."""
    return f"""
[server]
bind_address = "127.0.0.1"
port = @PORT@
workers = 1

[global.access_policy]
default = "allow"

[blob_store.s3]
endpoint = "{endpoint}"
bucket = "{bucket}"
access_key_id = "test"
secret_key = "test"
key_prefix = "reg"

[repository."nginx"]

[[repository."nginx".downstream]]
name = "peer"
url = "{downstream_url}"
{downstream_extra}"""


def make_bucket(endpoint: str, name: str | None = None) -> str:
    """Create a fresh bucket on ``endpoint`` and return its name."""
    import uuid

    import boto3

    name = name or f"angos-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="test",
                 aws_secret_access_key="test").create_bucket(Bucket=name)
    return name
