"""Slow and idle clients (slowloris) cannot stop a real server from serving others.

Each test runs ``angos server`` with one gunicorn worker and a small pool
(``max_concurrent_requests = 100``, the set-up that used to stop answering),
opens raw sockets that send nothing or half a request, and checks that

- other clients keep being answered while those sockets are open,
- the idle ones are closed by the server after ``header_timeout_secs``, while a
  keep-alive connection that carried a request is not,
- a request body that stops arriving is answered ``408`` after
  ``body_timeout_secs`` and stores nothing, and a download the client stops
  reading is ended after it,
- one address may hold at most ``max_connections_per_ip`` connections: its
  longest-idle connection makes room for a new one, and when all are busy the
  new one gets ``429 TOOMANYREQUESTS``.

Bounded: at most 160 sockets per test, timeouts of a few seconds, every wait
has a deadline.
"""

from __future__ import annotations

import json
import socket
import time

import pytest
import requests

from tests.api.helpers import digest_of

from .conftest import wait_for

POOL = 100
HEADER_TIMEOUT = 3


def _server(angos_factory, **server_options):
    options = {"header_timeout_secs": HEADER_TIMEOUT, **server_options}
    lines = "".join(f"{k} = {v}\n" for k, v in options.items())
    # angos_factory's [server] table comes first; these keys extend it.
    server = angos_factory(workers=1, extra=f"[global]\nmax_concurrent_requests = {POOL}\n", start=False)
    text = server.config_path.read_text().replace("workers = 1\n", "workers = 1\n" + lines, 1)
    server.config_path.write_text(text)
    return server.start()


def _connect(server) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=10)


def _closed_by_server(sock: socket.socket, within: float) -> bool:
    """True when the server closes ``sock`` (EOF or reset) within ``within`` seconds."""
    deadline = time.monotonic() + within
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        sock.settimeout(left)
        try:
            data = sock.recv(65536)
        except socket.timeout:
            return False
        except ConnectionResetError:
            return True
        if not data:
            return True


def _still_open(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        return sock.recv(1, socket.MSG_PEEK) != b""
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        sock.setblocking(True)


def _read_response(sock: socket.socket, timeout: float = 10) -> tuple[int, dict, bytes]:
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError(f"connection closed before a response: {data!r}")
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return int(lines[0].split()[1]), headers, body


def _idle_sockets(server, count: int) -> list[socket.socket]:
    """``count`` connections: half send nothing, half a request head without its end."""
    socks = []
    for i in range(count):
        s = _connect(server)
        if i % 2:
            s.sendall(b"GET /v2/ HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        socks.append(s)
    return socks


def _close_all(socks) -> None:
    for s in socks:
        s.close()


def test_idle_connections_do_not_stop_other_clients_and_are_closed_after_the_header_timeout(angos_factory):
    server = _server(angos_factory)
    idle = _idle_sockets(server, 150)  # more than the worker's pool of 100
    try:
        opened = time.monotonic()
        # Bounded liveness: every request of another client is answered promptly while the
        # idle sockets are open (before this change the 6th request never got an answer).
        with requests.Session() as client:
            for i in range(20):
                t = time.monotonic()
                r = client.get(server.v2(""), timeout=10)
                assert r.status_code == 200, r.text
                assert time.monotonic() - t < 5, f"request {i} took {time.monotonic() - t:.1f}s"
                with requests.get(server.v2(""), timeout=10, headers={"Connection": "close"}) as fresh:
                    assert fresh.status_code == 200  # new connections are accepted too
        assert time.monotonic() - opened < HEADER_TIMEOUT, "the checks above must run while the sockets idle"
        # Every idle socket is closed by the server: room made for new clients, or the timeout.
        deadline = opened + HEADER_TIMEOUT + 5
        left = [s for s in idle if not _closed_by_server(s, max(deadline - time.monotonic(), 0.01))]
        assert not left, f"{len(left)} idle connections still open {HEADER_TIMEOUT + 5}s after opening"
    finally:
        _close_all(idle)
    assert "Traceback" not in server.logs()


def test_idle_connections_stay_open_until_the_header_timeout_but_keep_alive_ones_longer(angos_factory):
    server = _server(angos_factory)  # keepalive_secs keeps its default (75 s)
    idle = _idle_sockets(server, 10)  # well under every cap: only the timeout can close them
    keep = _connect(server)
    try:
        keep.sendall(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n")
        assert _read_response(keep)[0] == 200
        opened = time.monotonic()
        time.sleep(1)  # part of the timeout under test: a second in, well before it, they are all open
        assert all(_still_open(s) for s in idle), "closed before the header timeout"
        for s in idle:
            assert _closed_by_server(s, HEADER_TIMEOUT + 3 - (time.monotonic() - opened))
        # The keep-alive connection carried a request: it waits keepalive_secs, not the header timeout.
        assert _still_open(keep)
        keep.sendall(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n")
        assert _read_response(keep)[0] == 200
    finally:
        _close_all(idle + [keep])


def test_a_body_that_stops_arriving_is_answered_408_and_stores_nothing(angos_factory):
    server = _server(angos_factory, body_timeout_secs=2)
    blob = b"x" * 1000
    digest = digest_of(blob)
    stalled = _connect(server)
    try:
        stalled.sendall((f"POST /v2/slow/app/blobs/uploads/?digest={digest} HTTP/1.1\r\nHost: x\r\n"
                         f"Content-Type: application/octet-stream\r\nContent-Length: {len(blob)}\r\n\r\n").encode()
                        + blob[:100])
        started = time.monotonic()
        # Others are served while the upload stalls.
        assert requests.get(server.v2(""), timeout=10).status_code == 200
        status, headers, body = _read_response(stalled, timeout=10)
        waited = time.monotonic() - started
        assert status == 408, body
        assert json.loads(body)["errors"][0]["code"] == "SIZE_INVALID"
        assert 1 <= waited < 8, waited
        assert _closed_by_server(stalled, 5)  # the rest of that body is never waited for
    finally:
        stalled.close()
    assert requests.head(server.v2(f"slow/app/blobs/{digest}"), timeout=10).status_code == 404
    # The same blob sent at once is stored: the timeout is about stalls, not about the request.
    r = requests.post(server.v2(f"slow/app/blobs/uploads/?digest={digest}"), data=blob, timeout=10)
    assert r.status_code == 201, r.text
    assert "Traceback" not in server.logs()


def test_a_download_the_client_stops_reading_is_ended_after_the_body_timeout(angos_factory):
    server = _server(angos_factory, body_timeout_secs=2)
    blob = bytes(range(256)) * (128 * 1024)  # 32 MiB: more than the kernel buffers hold
    digest = digest_of(blob)
    assert requests.post(server.v2(f"slow/app/blobs/uploads/?digest={digest}"), data=blob,
                         timeout=60).status_code == 201
    reader = _connect(server)
    try:
        reader.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        reader.sendall(f"GET /v2/slow/app/blobs/{digest} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        assert reader.recv(12).startswith(b"HTTP/1.1 200")  # then it stops reading
        wait_for(lambda: "no progress for 2s" in server.logs(), timeout=10, what="the stalled reader to be cut off")
        assert requests.get(server.v2(""), timeout=10).status_code == 200
    finally:
        reader.close()
    assert "Traceback" not in server.logs()


def test_one_address_at_its_cap_replaces_its_longest_idle_connection(angos_factory):
    server = _server(angos_factory, max_connections_per_ip=3, header_timeout_secs=30)
    idle = [_connect(server) for _ in range(3)]
    try:
        time.sleep(0.2)  # accepted, in this order
        assert all(_still_open(s) for s in idle)
        with requests.get(server.v2(""), timeout=10, headers={"Connection": "close"}) as r:
            assert r.status_code == 200
        assert _closed_by_server(idle[0], 5), "the longest-idle connection should have made room"
        assert _still_open(idle[1]) and _still_open(idle[2])
    finally:
        _close_all(idle)


def test_one_address_whose_connections_are_all_busy_gets_429(angos_factory):
    server = _server(angos_factory, max_connections_per_ip=3, body_timeout_secs=30)
    busy = []
    try:
        for i in range(3):  # three uploads in the middle of their bodies: being served, not idle
            s = _connect(server)
            s.sendall(b"POST /v2/busy/app/blobs/uploads/?digest=sha256:" + b"0" * 64 + b" HTTP/1.1\r\nHost: x\r\n"
                      b"Content-Length: 1000\r\n\r\n" + b"y" * 10)
            busy.append(s)
        time.sleep(0.5)  # the server has read their heads
        extra = _connect(server)
        busy.append(extra)
        extra.sendall(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n")
        status, headers, body = _read_response(extra)
        assert status == 429
        assert json.loads(body)["errors"][0]["code"] == "TOOMANYREQUESTS"
        assert _closed_by_server(extra, 5)
        assert all(_still_open(s) for s in busy[:3])  # nobody's request was cut short
        busy[0].close()  # one upload gives up: room for a new connection again
        wait_for(lambda: requests.get(server.v2(""), timeout=10,
                                      headers={"Connection": "close"}).status_code == 200,
                 timeout=10, what="a new connection to be served again")
    finally:
        _close_all(busy)


@pytest.mark.parametrize("key, value", [("header_timeout_secs", 0), ("body_timeout_secs", -1),
                                        ("max_connections_per_ip", '"many"')])
def test_invalid_limits_are_refused_with_their_key(key, value):
    from angos.config import ConfigError, load_config_text

    with pytest.raises(ConfigError) as err:
        load_config_text(f'[server]\nbind_address = "127.0.0.1"\n{key} = {value}\n'
                         f'[blob_store.fs]\nroot_dir = "/tmp/x"\n')
    assert str(err.value).startswith(f"server.{key}: ")
    assert "\n" not in str(err.value)
