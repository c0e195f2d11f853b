"""README.md's "Try it" and command table, run as written.

"Try it": ``make run`` is stood in for by what it runs (``angos -c config.toml
server`` with the configuration ``make run`` writes, on a free port; the venv
is this one). The snippet's waiting line starts *before* the server, so it
must wait; once it returns the server answers ``/readyz`` and has logged its
ready line; then the snippet's skopeo push and tag listing run unchanged.
"""

from __future__ import annotations

import os
import re
import subprocess

import pytest
import requests

from angos.devconfig import DEV_CONFIG

from ..conftest import ANGOS, ROOT, free_port, wait_for
from .snippets import BIN, Server, block, on_ports, oci_archive, run_sh

pytestmark = pytest.mark.timeout(300)


def test_try_it_waits_for_readyz_then_pushes_and_lists(tmp_path):
    port = free_port()
    lines = on_ports(block("README.md", "sh", first="make run &\n"), {8000: port}).splitlines()
    assert lines[0] == "make run &"
    wait_line, rest = lines[1], lines[2:]
    assert "/readyz" in wait_line and wait_line.startswith("timeout "), wait_line
    (tmp_path / "config.toml").write_text(on_ports(DEV_CONFIG, {8000: port}))
    oci_archive(tmp_path)
    env = dict(os.environ, PATH=BIN + os.pathsep + os.environ.get("PATH", ""))
    waiter = subprocess.Popen(["bash", "-euo", "pipefail", "-c", wait_line], cwd=tmp_path, env=env)
    server = Server(tmp_path, "config.toml")
    try:
        assert waiter.poll() is None, "the waiting line returned before any server existed"
        server.start()
        assert waiter.wait(timeout=240) == 0
        assert requests.get(f"http://127.0.0.1:{port}/readyz", timeout=10).status_code == 200
        ready = re.compile(rf"ready on http://127\.0\.0\.1:{port}\b")
        wait_for(lambda: ready.search(server.logs()), timeout=30, what="the server's ready line")
        res = run_sh("\n".join(rest), cwd=tmp_path)
        assert res.returncode == 0, res.stderr + server.logs()[-3000:]
        assert '"tags":["v1"]' in res.stdout.replace(" ", ""), res.stdout
    finally:
        if waiter.poll() is None:
            waiter.kill()
            waiter.wait(10)
        server.stop()


def test_scrub_without_a_phase_exits_1_naming_the_phases(tmp_path):
    """The command table: scrub needs at least one phase flag."""
    config = tmp_path / "config.toml"
    config.write_text(DEV_CONFIG.replace('"./data"', f'"{tmp_path / "data"}"'))
    res = subprocess.run(ANGOS + ["-c", str(config), "scrub", "--dry-run"], capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 1
    assert res.stderr.startswith("angos: scrub: nothing to do; choose at least one of --replicate"), res.stderr
    assert res.stderr.count("\n") == 1  # one line
    rows = [line for line in (ROOT / "README.md").read_text().splitlines() if line.startswith("| `scrub ")]
    assert len(rows) == 1 and "at least one phase flag is required" in rows[0], rows
