"""The `angos server` process: zero-copy downloads, metrics aggregated across gunicorn
workers, health and readiness, sd_notify. (A graceful stop finishing an in-flight upload is
in test_cli.py, with the idle keep-alive connections it closes.)"""

from __future__ import annotations

import hashlib
import os
import signal

import pytest
import requests

from .conftest import wait_for

MiB = 1 << 20


def _digest_of_blocks(block: bytes, count: int) -> str:
    h = hashlib.sha256()
    for _ in range(count):
        h.update(block)
    return "sha256:" + h.hexdigest()


def _syscr(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/io") as fh:
            for line in fh:
                if line.startswith("syscr:"):
                    total += int(line.split()[1])
    return total


def test_blob_download_uses_sendfile_not_a_read_loop(angos_factory):
    """A 64 MiB GET costs a handful of syscalls, not one read() per 8 KiB block."""
    server = angos_factory(workers=1)
    block = bytes(range(256)) * 4096
    count = 64
    digest = _digest_of_blocks(block, count)
    assert requests.post(server.v2(f"zc/blobs/uploads/?digest={digest}"),
                         data=(block for _ in range(count))).status_code == 201
    workers = server.worker_pids()
    assert workers
    before = _syscr(workers)
    h = hashlib.sha256()
    with requests.get(server.v2(f"zc/blobs/{digest}"), stream=True) as r:
        assert r.status_code == 200
        for chunk in r.iter_content(MiB):
            h.update(chunk)
    assert "sha256:" + h.hexdigest() == digest
    reads = _syscr(workers) - before
    # A Python read loop would need >= 8192 reads for 64 MiB; sendfile needs almost none.
    assert reads < 1000, f"{reads} read syscalls for a 64 MiB download"


def test_metrics_count_requests_from_every_worker(angos_factory):
    server = angos_factory(workers=2)
    n = 60
    with requests.Session() as a, requests.Session() as b:
        for i in range(n // 2):
            assert a.get(server.v2("")).status_code == 200
            assert b.get(server.v2("")).status_code == 200
    text = requests.get(server.url + "/metrics").text
    line = [ln for ln in text.splitlines()
            if ln.startswith("http_requests_total{") and 'route="get-api-version"' in ln and 'method="GET"' in ln
            and 'status="200"' in ln]
    assert line, text[:2000]
    assert float(line[0].rsplit(" ", 1)[1]) == n
    assert 'http_request_duration_seconds_bucket{le="0.005"' in text  # second-scale buckets
    assert "http_requests_in_flight" in text


def test_readyz_reports_unavailable_storage_and_healthz_stays_up(angos_factory):
    server = angos_factory()
    assert requests.get(server.url + "/readyz").status_code == 200
    (server.workdir / "data").rename(server.workdir / "data.gone")
    r = requests.get(server.url + "/readyz")
    assert r.status_code == 503
    assert "reason" in r.json()
    assert requests.get(server.url + "/healthz").status_code == 200


@pytest.mark.parametrize("path", ["/v2/nope/unknown/endpoint", "/v3/"])
def test_unknown_routes_answer_oci_json(angos, path):
    r = requests.get(angos.url + path)
    assert r.status_code == 404
    assert r.json()["errors"][0]["code"]


def test_the_server_speaks_sd_notify_when_systemd_asks(angos_factory, tmp_path):
    """Type=notify: READY=1 once listening, RELOADING=1 then READY=1 on SIGHUP, STOPPING=1 on SIGTERM."""
    import socket

    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(30)
    try:
        server = angos_factory(env={"NOTIFY_SOCKET": path}, start=False)
        server.start(wait=False)

        def next_message() -> list[str]:
            return sock.recv(4096).decode().split("\n")

        assert next_message()[0] == "READY=1"  # gunicorn's, once its sockets listen
        assert next_message() == [f"STATUS=serving on 127.0.0.1:{server.port}"]
        # Ready means listening: a request made now is answered (once a worker accepts it).
        assert requests.get(server.url + "/healthz", timeout=30).status_code == 200

        server.proc.send_signal(signal.SIGHUP)
        reloading = next_message()
        assert reloading[0] == "RELOADING=1" and reloading[1].startswith("MONOTONIC_USEC=")
        assert next_message() == ["READY=1"]

        server.proc.send_signal(signal.SIGTERM)
        assert next_message() == ["STOPPING=1"]
        assert server.proc.wait(30) == 0
    finally:
        sock.close()


# Loaded into every Python process of the server (PYTHONPATH): in a gunicorn worker that is
# importing the app (load_wsgi on the stack), the first worker to execute
# angos.replication.notify signals itself while that module is still empty in sys.modules, as
# systemd's SIGTERM would if it landed at that instant.
_SIGTERM_MID_IMPORT = '''
import os, signal, sys, traceback
from importlib.abc import MetaPathFinder

MARKER = {marker!r}


class _Hold(MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != "angos.replication.notify" or os.path.exists(MARKER):
            return None
        if not any(f.name == "load_wsgi" for f in traceback.extract_stack()):
            return None
        sys.meta_path.remove(self)
        try:
            from importlib.util import find_spec
            spec = find_spec(name)
        finally:
            sys.meta_path.insert(0, self)
        real = spec.loader.exec_module

        def exec_module(module):
            open(MARKER, "w").close()
            os.kill(os.getpid(), signal.SIGTERM)  # handled before the module's first statement
            real(module)

        spec.loader.exec_module = exec_module
        return spec


sys.meta_path.insert(0, _Hold())
'''


def test_a_worker_told_to_stop_while_it_imports_the_app_boots_and_exits_cleanly(angos_factory, tmp_path):
    """A SIGTERM handler that imported a module could find it half-imported (the worker was
    importing it when the signal came): ImportError, the worker "failed to boot" and the master
    halted with exit code 1 (a CI failure of one stop in ~20 under load)."""
    marker = tmp_path / "signalled"
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(_SIGTERM_MID_IMPORT.format(marker=str(marker)))
    path = os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH")) if p)
    server = angos_factory(env={"PYTHONPATH": path})
    assert marker.exists(), "the hook never ran: the test exercised nothing"
    assert requests.get(server.url + "/v2/", timeout=30).status_code == 200
    assert server.stop() == 0, server.logs()
    log = server.logs()
    assert "failed to boot" not in log and "Traceback" not in log, log


def _tcp_inodes(port: int) -> dict:
    """``{(local port, remote port, state): inode}`` of this host's IPv4 TCP sockets on ``port``."""
    out = {}
    with open("/proc/net/tcp") as fh:
        next(fh)
        for line in fh:
            f = line.split()
            lport, rport = int(f[1].split(":")[1], 16), int(f[2].split(":")[1], 16)
            if port in (lport, rport):
                out[(lport, rport, f[3])] = f[9]
    return out


def _socket_inodes(pid: int) -> set[str]:
    found = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:["):
            found.add(link[8:-1])
    return found


def test_a_stopping_worker_answers_a_request_that_arrives_after_it_closed_its_listener(angos_factory):
    """A connection the worker accepted, whose request comes only after the worker was told to stop
    and closed its listener (it stops accepting first), is answered, then closed. gunicorn asked the
    closed listener for its address there: EBADF, and the connection was reset unanswered."""
    import socket

    server = angos_factory(workers=1)
    worker, = server.worker_pids()
    listener = _tcp_inodes(server.port)[(server.port, 0, "0A")]  # 0A: LISTEN
    conn = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    try:
        mine = conn.getsockname()[1]
        # The worker has accepted it (the server side is one of its descriptors), nothing sent yet.
        wait_for(lambda: _tcp_inodes(server.port).get((server.port, mine, "01")) in _socket_inodes(worker),
                 what="the worker to accept the connection")
        os.kill(worker, signal.SIGTERM)  # graceful: it stops accepting and serves what it holds
        wait_for(lambda: listener not in _socket_inodes(worker), what="the worker to close its listener")
        conn.sendall(b"GET /v2/ HTTP/1.1\r\nHost: registry\r\n\r\n")
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = conn.recv(4096)
            assert chunk, f"closed without an answer after {answer!r}"
            answer += chunk
    finally:
        conn.close()
    head = answer.split(b"\r\n\r\n")[0].decode().lower()
    assert head.startswith("http/1.1 200"), head
    assert "connection: close" in head, head
    assert "Bad file descriptor" not in server.logs(), server.logs()
