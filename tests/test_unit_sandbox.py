"""``angos server`` inside the shipped server unit's sandbox (``systemd/angos-server.service``).

The unit sets no ``WorkingDirectory=`` (so the service starts in ``/``) and
``ProtectSystem=strict``: everything is read-only but ``/var/lib/angos``, its
``StateDirectory=``. With an S3 metadata store the server's in-process drain
keeps only its wake-ups on local disk; they used to default to ``./_jobs``,
i.e. ``/_jobs`` on a read-only root, and the server could not start under the
unit. The sandbox is built from the unit file with bubblewrap
(:mod:`tests.sandbox`), a test directory standing in for ``/var/lib/angos``;
the sandbox is what proves the server writes nowhere else. (The installed
package, run as the ``angos`` user, is tested the same way in
tests/packaging/test_deb.py.)
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from .conftest import ROOT, free_port, make_bucket, wait_for, wait_http
from .replication.conftest import remote_digest
from .replication.test_failures import OCI, _small_manifest
from .sandbox import interpreter_binds, sandboxed, umask

UNIT = ROOT / "systemd" / "angos-server.service"


def s3_config(port: int, endpoint: str, bucket: str, downstream: str) -> str:
    store = f'endpoint = "{endpoint}"\nbucket = "{bucket}"\naccess_key_id = "test"\nsecret_key = "test"\n'
    return (f'[server]\nbind_address = "127.0.0.1"\nport = {port}\nworkers = 2\n\n'
            f'[global.access_policy]\ndefault = "allow"\n\n'
            f'[blob_store.s3]\n{store}key_prefix = "blobs"\n\n'
            f'[metadata_store.s3]\n{store}key_prefix = "meta"\n\n[metadata_store.s3.lock_strategy.s3]\n\n'
            f'[repository."team"]\n[repository."team".access_policy]\ndefault = "allow"\n'
            f'[[repository."team".downstream]]\nname = "peer"\nurl = "{downstream}"\n')


class SandboxedServer:
    """``angos server`` as the unit runs it: sandboxed, from ``/``, with the unit's umask."""

    def __init__(self, tmp: Path, config_text: str, port: int, state_dir: Path, announce_state: bool = True):
        self.port, self.url = port, f"http://127.0.0.1:{port}"
        self.config = tmp / "config.toml"
        self.config.write_text(config_text)
        self.log_path = tmp / "server.log"
        argv, env = sandboxed(UNIT, [sys.executable, "-m", "angos.cli", "-c", str(self.config), "server"],
                              state_dir=state_dir, ro_binds=[self.config, *interpreter_binds()],
                              as_user=False)
        if not announce_state:  # a unit without StateDirectory=: the directory is there, unnamed
            env.pop("STATE_DIRECTORY")
        clean = {k: v for k, v in os.environ.items() if k not in ("ANGOS_JOBS_DIR", "STATE_DIRECTORY")}
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env={**clean, **env},
                                         umask=umask(UNIT), start_new_session=True)

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    def v2(self, path: str) -> str:
        return f"{self.url}/v2/{path}"

    def close(self) -> None:
        """SIGTERM to the whole group (bwrap forwards no signal), as a stop of the unit would."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)


@pytest.fixture
def sandboxed_server(tmp_path):
    servers = []

    def make(*args, **kw):
        servers.append(SandboxedServer(*args, **kw))
        return servers[-1]

    yield make
    for s in servers:
        s.close()


def test_s3_metadata_server_runs_its_jobs_under_the_unit_sandbox(angos_factory, moto_server, sandboxed_server,
                                                                 tmp_path):
    peer = angos_factory()
    state = tmp_path / "state"  # stands in for /var/lib/angos
    state.mkdir(mode=0o750)
    port = free_port()
    server = sandboxed_server(tmp_path, s3_config(port, moto_server, make_bucket(moto_server), peer.url), port,
                              state)
    wait_http(server.url + "/healthz", server.proc, timeout=60)
    # A push queues a replication job that the server's own drain runs: its wake-ups live under
    # $STATE_DIRECTORY, the one place the unit lets it write.
    body, d = _small_manifest(server, "team/app", "sandboxed")
    r = requests.put(f"{server.url}/v2/team/app/manifests/v1", data=body, headers={"Content-Type": OCI}, timeout=30)
    assert r.status_code == 201, r.text
    wait_for(lambda: remote_digest(peer, "team/app", "v1") == d, timeout=60, what="the replicated tag")
    assert (state / "_jobs" / "pending" / "replication" / "queue.db").is_file()
    assert "Read-only file system" not in server.logs()
    written = sorted(str(p.relative_to(state)) for p in state.rglob("*"))
    assert written and all(p.startswith("_jobs") for p in written), written  # nothing else lands there


def test_without_a_writable_jobs_directory_start_up_fails_with_one_line(moto_server, sandboxed_server, tmp_path):
    # No $STATE_DIRECTORY and no filesystem anywhere in the config: only ./_jobs (read-only /) is left.
    state = tmp_path / "state"
    state.mkdir()
    port = free_port()
    server = sandboxed_server(tmp_path, s3_config(port, moto_server, make_bucket(moto_server), "http://127.0.0.1:1"),
                              port, state, announce_state=False)
    assert server.proc.wait(60) == 1
    errors = [line for line in server.logs().splitlines() if line.startswith("angos: ")]
    assert len(errors) == 1 and "/_jobs" in errors[0] and "ANGOS_JOBS_DIR" in errors[0], server.logs()
