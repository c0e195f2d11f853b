"""The ``angos`` command line: entry point, default and repeated ``-c``, exit
codes, and how ``angos server`` stops.

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
import threading
import time
from pathlib import Path

import requests

from .conftest import ANGOS, free_port, wait_http

ANGOS_SCRIPT = Path(sys.executable).parent / "angos"


def config_text(port: int, data: Path, server_extra: str = "") -> str:
    return textwrap.dedent(f"""\
        [server]
        bind_address = "127.0.0.1"
        port = {port}
        workers = 1
        {server_extra}

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


def read_response(sock: socket.socket) -> bytes:
    """Read one HTTP response with a Content-Length body off a raw socket."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(4096)
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    while len(body) < length:
        body += sock.recv(4096)
    return head


def test_sigterm_closes_idle_keepalive_connections_but_finishes_in_flight_requests(tmp_path):
    port = free_port()
    # Drain and keep-alive far longer than the guards below, so neither can be
    # what ends the idle connection.
    (tmp_path / "config.toml").write_text(config_text(port, tmp_path / "data",
                                                      "shutdown_drain_secs = 600\nkeepalive_secs = 600"))
    block, count = b"k" * (1 << 20), 12
    digest = "sha256:" + __import__("hashlib").sha256(block * count).hexdigest()
    with running(["server"], tmp_path) as proc:
        wait_http(f"http://127.0.0.1:{port}/healthz", proc)
        idle = socket.create_connection(("127.0.0.1", port))
        idle.sendall(b"GET /v2/ HTTP/1.1\r\nHost: registry\r\n\r\n")
        assert read_response(idle).startswith(b"HTTP/1.1 200")

        started, result = threading.Event(), {}

        def slow_body():
            for i in range(count):
                if i == 2:
                    started.set()
                time.sleep(0.05)  # a slow client: the upload is still in flight at SIGTERM
                yield block

        def push():
            result["r"] = requests.post(f"http://127.0.0.1:{port}/v2/stop/app/blobs/uploads/?digest={digest}",
                                        data=slow_body(), headers={"Connection": "close"})

        pusher = threading.Thread(target=push)
        pusher.start()
        assert started.wait(30)
        proc.send_signal(signal.SIGTERM)

        idle.settimeout(120)
        try:
            assert idle.recv(1) == b"", "the idle keep-alive connection was not closed"
        finally:
            idle.close()
        pusher.join(120)
        assert result["r"].status_code == 201
        assert proc.wait(120) == 0
    # The finished upload's bytes landed: the next server on the same data serves all of them.
    with running(["server"], tmp_path) as proc:
        wait_http(f"http://127.0.0.1:{port}/healthz", proc)
        r = requests.head(f"http://127.0.0.1:{port}/v2/stop/app/blobs/{digest}", timeout=30)
        assert r.status_code == 200 and int(r.headers["Content-Length"]) == count * len(block)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
