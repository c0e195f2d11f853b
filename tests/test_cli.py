"""The ``angos`` command line: entry point, default and repeated ``-c``, exit codes.

Servers here are real ``angos server`` processes started without the
``angos_factory`` fixture because the point is how the command line picks its
configuration (no ``-c`` at all, or several). Each is stopped in ``finally``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import requests

from .conftest import ANGOS, free_port, wait_http

ANGOS_SCRIPT = Path(sys.executable).parent / "angos"


def config_text(port: int, data: Path) -> str:
    return textwrap.dedent(f"""\
        [server]
        bind_address = "127.0.0.1"
        port = {port}
        workers = 1

        [global.access_policy]
        default = "allow"

        [blob_store.fs]
        root_dir = "{data}"
        """)


@contextlib.contextmanager
def running(args: list[str], cwd: Path):
    proc = subprocess.Popen(ANGOS + args, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        proc.stderr.close()


def test_console_script_lists_commands():
    res = subprocess.run([str(ANGOS_SCRIPT), "--help"], capture_output=True, text=True, timeout=30)
    assert res.returncode == 0
    assert "server" in res.stdout and "-c FILE" in res.stdout


def test_without_c_a_missing_config_toml_is_one_line_error(tmp_path):
    res = subprocess.run(ANGOS + ["server"], cwd=tmp_path, capture_output=True, text=True, timeout=30)
    assert res.returncode == 1
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "config.toml" in lines[0], res.stderr
    assert "Traceback" not in res.stderr


def test_without_c_server_reads_config_toml_and_stops_cleanly_on_sigterm(tmp_path):
    port = free_port()
    (tmp_path / "config.toml").write_text(config_text(port, tmp_path / "data"))
    with running(["server"], tmp_path) as proc:
        wait_http(f"http://127.0.0.1:{port}/healthz", proc)
        assert requests.get(f"http://127.0.0.1:{port}/v2/").status_code == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0


def test_repeated_c_server_listens_where_the_last_file_says(tmp_path):
    first, last = free_port(), free_port()
    (tmp_path / "a.toml").write_text(config_text(first, tmp_path / "data"))
    (tmp_path / "b.toml").write_text(f"[server]\nport = {last}\n")
    with running(["-c", "a.toml", "-c", "b.toml", "server"], tmp_path) as proc:
        wait_http(f"http://127.0.0.1:{last}/healthz", proc)
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", first)) != 0, "the overridden port is listening"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0


def test_server_exits_1_when_its_port_is_taken(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        (tmp_path / "config.toml").write_text(config_text(port, tmp_path / "data"))
        with running(["server"], tmp_path) as proc:
            assert proc.wait(60) == 1
            err = proc.stderr.read().decode(errors="replace")
    assert f"127.0.0.1', {port}" in err or f"127.0.0.1:{port}" in err, err
    assert "Traceback" not in err
