"""The two registries under test, as context managers.

- :class:`Angos` runs ``python -m angos.cli -c config.toml server`` (gunicorn
  with gevent workers, 2 workers by default, allow-all policy, filesystem
  store in a temporary directory).
- :class:`Distribution` runs ``docker-registry serve config.yml`` (CNCF
  Distribution 2.8 from Debian) with filesystem storage in a temporary
  directory, delete enabled and the in-memory blob descriptor cache that the
  Debian package's own config ships with.

Both bind 127.0.0.1 on a free port, log at warning level to a file in their
work directory and keep no access log, so neither pays for logging the other
does not. Each child runs in its own session (a Ctrl-C in the terminal reaches
only the harness, which then stops the servers in order) and is given
``PR_SET_PDEATHSIG`` so even a SIGKILLed harness leaves no server behind.
Leaving the ``with`` block kills the whole process group and removes the work
directory.
"""

from __future__ import annotations

import ctypes
import http.client
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

_PR_SET_PDEATHSIG = 1


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_url(url: str, proc, timeout: float = 30.0, ok=(200, 401)) -> None:
    """Wait until ``url`` answers with one of ``ok``; fail early if ``proc`` exits."""
    import requests

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args} exited with {proc.returncode} before {url} answered")
        try:
            if requests.get(url, timeout=1).status_code in ok:
                return
        except requests.RequestException:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{url} did not come up")


def _die_with_parent() -> None:
    # Runs in the child between fork and exec: the kernel sends SIGKILL to the
    # child when the harness dies, whatever killed it.
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except OSError:
        pass


def wait_http(port: int, path: str, proc: subprocess.Popen, log: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before answering; log:\n{_tail(log)}")
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            resp.read()
            if resp.status in (200, 401):
                return
            last = resp.status
        except OSError as exc:
            last = exc
        finally:
            conn.close()
        time.sleep(0.05)
    raise RuntimeError(f"127.0.0.1:{port}{path} did not come up ({last}); log:\n{_tail(log)}")


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class _Server:
    name = "server"
    health_path = "/v2/"

    def __init__(self, parent_dir: str | None = None):
        self.workdir = Path(tempfile.mkdtemp(prefix=f"bench-{self.name}-", dir=parent_dir))
        self.data_dir = self.workdir / "data"
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.url = f"http://{self.host}"
        self.log_path = self.workdir / "server.log"
        self.proc: subprocess.Popen | None = None

    def command(self) -> list[str]:
        raise NotImplementedError

    def env(self) -> dict:
        return dict(os.environ)

    def __enter__(self) -> "_Server":
        try:
            with open(self.log_path, "ab") as log:
                self.proc = subprocess.Popen(self.command(), cwd=self.workdir, stdout=log, stderr=subprocess.STDOUT,
                                             stdin=subprocess.DEVNULL, env=self.env(), start_new_session=True,
                                             preexec_fn=_die_with_parent)
            wait_http(self.port, self.health_path, self.proc, self.log_path)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def pids(self) -> list[int]:
        """Every process of the server (its own session: master, workers, helpers)."""
        if self.proc is None:
            return []
        out = subprocess.run(["pgrep", "-g", str(self.proc.pid)], capture_output=True, text=True).stdout
        return sorted(int(p) for p in out.split())

    def cpu_seconds(self) -> float:
        """User + system CPU time used so far by the server's live processes (all threads)."""
        tick = os.sysconf("SC_CLK_TCK")
        total = 0
        for pid in self.pids():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
        return total / tick

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(10)
            except subprocess.TimeoutExpired:
                pass
            except ProcessLookupError:
                pass
        # Whatever is left in the group (e.g. a gunicorn worker mid-request) goes now.
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            pass

    def __exit__(self, *exc) -> None:
        try:
            self.stop()
        finally:
            shutil.rmtree(self.workdir, ignore_errors=True)


class Angos(_Server):
    name = "angos"
    health_path = "/healthz"

    def __init__(self, parent_dir: str | None = None, workers: int = 2, direct_io: bool = True):
        super().__init__(parent_dir)
        self.workers = workers
        self.config_path = self.workdir / "config.toml"
        self.config_path.write_text(textwrap.dedent(f"""\
            [server]
            bind_address = "127.0.0.1"
            port = {self.port}
            workers = {workers}

            [global.access_policy]
            default = "allow"

            [blob_store.fs]
            root_dir = "{self.data_dir}"
            direct_io = {str(direct_io).lower()}
            """))

    def command(self) -> list[str]:
        return [sys.executable, "-m", "angos.cli", "-c", str(self.config_path), "server"]

    def env(self) -> dict:
        env = dict(os.environ)
        env["ANGOS_LOG"] = "warn"
        env.pop("RUST_LOG", None)
        # The checkout, not whatever angos an outer environment may have installed.
        root = str(Path(__file__).resolve().parent.parent)
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        return env


class Distribution(_Server):
    name = "distribution"

    def __init__(self, parent_dir: str | None = None):
        if shutil.which("docker-registry") is None:
            raise RuntimeError("docker-registry is not installed (apt-get install docker-registry)")
        super().__init__(parent_dir)
        self.config_path = self.workdir / "config.yml"
        self.config_path.write_text(textwrap.dedent(f"""\
            version: 0.1
            log:
              level: warn
              accesslog:
                disabled: true
            storage:
              cache:
                blobdescriptor: inmemory
              filesystem:
                rootdirectory: {self.data_dir}
              delete:
                enabled: true
            http:
              addr: 127.0.0.1:{self.port}
            """))

    def command(self) -> list[str]:
        return ["docker-registry", "serve", str(self.config_path)]


def versions() -> dict[str, str]:
    """Versions of everything that shapes the numbers, for the report."""
    out: dict[str, str] = {}

    def run(cmd: list[str]) -> str:
        try:
            res = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return "?"
        return (res.stdout or res.stderr).strip().splitlines()[0] if (res.stdout or res.stderr).strip() else "?"

    out["python"] = sys.version.split()[0]
    try:
        import gunicorn
        out["gunicorn"] = gunicorn.__version__
    except ImportError:
        out["gunicorn"] = "?"
    try:
        import gevent
        out["gevent"] = gevent.__version__
    except ImportError:
        out["gevent"] = "?"
    out["distribution"] = run(["docker-registry", "--version"])
    out["wrk"] = run(["wrk", "--version"])
    out["skopeo"] = run(["skopeo", "--version"])
    return out


def machine() -> dict[str, str]:
    model = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = os.getloadavg()
    return {"nproc": str(os.cpu_count()), "cpu": model, "load": " ".join(f"{x:.2f}" for x in load),
            "kernel": os.uname().release}


class Stopwatch:
    """Wall time of a block and the CPU time the server spent in it (client CPU excluded)."""

    def __init__(self, server: _Server):
        self.server = server
        self.wall = 0.0
        self.cpu = 0.0

    def __enter__(self) -> "Stopwatch":
        self._cpu0 = self.server.cpu_seconds()
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.wall = time.perf_counter() - self._t0
        self.cpu = self.server.cpu_seconds() - self._cpu0
