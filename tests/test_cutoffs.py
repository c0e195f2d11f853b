"""The time limits of the configuration, each shown cutting something off no earlier than its
setting allows (and well before the default would):

- ``server.keepalive_secs``: how long a connection may sit idle, before its first request or
  between two, before the server closes it;
- ``server.query_timeout``: how long a worker that makes no progress is tolerated before it
  is recycled (a worker stopped with SIGSTOP stands for one stuck in a request); the
  requests waiting for it are then served by its replacement;
- ``server.shutdown_drain_secs``: on SIGTERM, how long an in-flight request may go on;
- ``[global.job_queue] drain_timeout_secs``: on SIGTERM, how long ``angos worker`` lets a
  running job go on; the job keeps its record and runs again;
- ``angos worker`` stops as gracefully on SIGINT as on SIGTERM;
- ``--poll-interval``: how often an idle SQLite worker looks for work.

Lower bounds are exact (measured from events the test saw before the limit could start to
count); upper bounds are loose, for a loaded machine.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time

import pytest
import requests

from .conftest import wait_for
from .test_cli import read_response
from .queue.conftest import QueueEnv, read_lines

SLACK = 15.0  # how late a cut-off may come on a busy machine


def limited(angos_factory, setting: str):
    """A one-worker server with ``setting`` in its [server] table."""
    server = angos_factory(workers=1, start=False)
    server.config_path.write_text(server.config_path.read_text().replace("[server]\n", f"[server]\n{setting}\n"))
    return server.start()


def _closed_after(sock: socket.socket, since: float) -> float:
    """Seconds from ``since`` until the server closes ``sock`` (a read sees EOF or a reset)."""
    sock.settimeout(120)
    try:
        assert sock.recv(1) == b""
    except ConnectionResetError:
        pass
    return time.monotonic() - since


def test_keepalive_secs_closes_idle_connections(angos_factory):
    server = limited(angos_factory, "keepalive_secs = 2\nheader_timeout_secs = 6")
    opened = time.monotonic()  # before connecting: the server cannot accept it any earlier
    silent = socket.create_connection(("127.0.0.1", server.port))
    used = socket.create_connection(("127.0.0.1", server.port))
    # The server's idle clock starts once it has written the answer, which is after the request
    # was sent and before the answer is read here: the first bounds the close from below.
    asked = time.monotonic()
    used.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert read_response(used).startswith(b"HTTP/1.1 200")
    answered = time.monotonic()
    # Idle after its first request: closed once idle keepalive_secs (the default, 75 s, would not be near).
    closed = _closed_after(used, answered)
    assert 2.0 <= closed + (answered - asked) and closed < 2.0 + SLACK
    # A connection that never sends a request is a slow client: header_timeout_secs applies, not keep-alive.
    assert 6.0 <= _closed_after(silent, opened) < 6.0 + SLACK
    silent.close()
    used.close()


def test_query_timeout_recycles_a_stuck_worker_and_its_replacement_serves(angos_factory):
    server = limited(angos_factory, "query_timeout = 3")
    (stuck,) = server.worker_pids()
    os.kill(stuck, signal.SIGSTOP)  # no progress from now on: no request, no heartbeat
    stopped = time.monotonic()
    result = {}
    waiting = threading.Thread(target=lambda: result.update(r=requests.get(server.url + "/v2/", timeout=120)))
    waiting.start()  # queued behind the stuck worker
    wait_for(lambda: stuck not in server.worker_pids() and server.worker_pids(), timeout=3 + SLACK + 30,
             interval=0.05, what="the stuck worker to be recycled")
    recycled = time.monotonic() - stopped
    # Its last heartbeat was at most a second before the stop, so the limit ran out no earlier than 2 s after.
    assert 2.0 <= recycled < 3.0 + SLACK
    assert f"WORKER TIMEOUT (pid:{stuck})" in server.logs()
    waiting.join(60)
    assert result["r"].status_code == 200  # the request that waited was served, by the new worker


def test_shutdown_drain_secs_bounds_how_long_in_flight_requests_may_go_on(angos_factory):
    server = limited(angos_factory, "shutdown_drain_secs = 3")
    started, result = threading.Event(), {}

    def endless_body():
        started.set()
        for _ in range(1200):  # two minutes of upload, far beyond the drain
            yield b"x" * 4096
            time.sleep(0.1)  # a slow client: the request stays in flight

    def push():
        try:
            result["r"] = requests.post(server.v2("drain/app/blobs/uploads/?digest=sha256:" + "0" * 64),
                                        data=endless_body(), timeout=120)
        except requests.RequestException as exc:
            result["error"] = exc
        result["at"] = time.monotonic()

    pusher = threading.Thread(target=push)
    pusher.start()
    assert started.wait(30)
    # The upload is in flight (being served) before the stop: this very reading is the other one.
    wait_for(lambda: in_flight(server) >= 2, what="the upload to be in flight")
    term = time.monotonic()
    server.proc.send_signal(signal.SIGTERM)
    server.proc.wait(3 + SLACK + 30)
    exited = time.monotonic() - term
    pusher.join(60)
    assert "r" not in result, result  # cut off: it never completed
    assert 3.0 <= result["at"] - term and 3.0 <= exited < 3.0 + SLACK


def in_flight(server) -> float:
    text = requests.get(server.url + "/metrics", timeout=10).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("http_requests_in_flight"))


@pytest.fixture
def sqlite_env(tmp_path):
    env = QueueEnv(tmp_path, "sqlite", None)
    yield env
    env.close()


def test_drain_timeout_secs_bounds_a_worker_stop_and_the_cut_job_runs_again(sqlite_env):
    sqlite_env.configure("drain_timeout_secs = 2\n")
    q = sqlite_env.queue()
    log = sqlite_env.out / "held.log"
    q.submit("test.hold", "held", {"dir": str(sqlite_env.out), "name": "held"})
    w = sqlite_env.worker()
    wait_for(lambda: read_lines(log), what="the job to start")
    term = time.monotonic()
    assert w.stop(signal.SIGTERM, timeout=2 + SLACK + 30) == 0
    took = time.monotonic() - term
    assert 2.0 <= took < 2.0 + SLACK
    assert "drain timeout (2.0s) elapsed with 1 job(s) still running; they will run again" in w.logs()
    assert read_lines(log)[-1][0] == "start"  # cut off, not finished
    (sqlite_env.out / "held.go").touch()
    again = sqlite_env.worker()
    wait_for(lambda: read_lines(log)[-1][0] == "end", what="the cut job to run again")
    assert [line[0] for line in read_lines(log)] == ["start", "start", "end"]
    assert again.stop() == 0


def test_sigint_stops_a_worker_as_gracefully_as_sigterm(sqlite_env):
    q = sqlite_env.queue()
    log = sqlite_env.out / "held.log"
    q.submit("test.hold", "held", {"dir": str(sqlite_env.out), "name": "held"})
    w = sqlite_env.worker()
    wait_for(lambda: read_lines(log), what="the job to start")
    w.proc.send_signal(signal.SIGINT)
    wait_for(lambda: "received SIGINT: finishing running jobs" in w.logs(), what="the worker to take the signal")
    (sqlite_env.out / "held.go").touch()  # the running job may finish after the signal
    assert w.proc.wait(30) == 0
    assert [line[0] for line in read_lines(log)] == ["start", "end"]
    assert q.list_pending() == ([], None)


def test_poll_interval_is_how_often_an_idle_sqlite_worker_looks_for_work(sqlite_env):
    # One job thread, so one poll schedule to reason about: after a job it polls once more at once,
    # finds nothing, and then sleeps the poll interval before looking again.
    sqlite_env.config_path.write_text(sqlite_env.config_path.read_text().replace(
        "max_concurrent_replication_jobs = 4", "max_concurrent_replication_jobs = 1"))
    q = sqlite_env.queue()
    q.submit("test.record", "first", {"dir": str(sqlite_env.out)})
    w = sqlite_env.worker("--queue", "replication", "--poll-interval", "1500ms")
    first = wait_for(lambda: [line for line in read_lines(sqlite_env.out / "first.log") if line[0] == "end"],
                     what="the first job")
    submitted = time.time()
    q.submit("test.record", "second", {"dir": str(sqlite_env.out)})
    (start,) = wait_for(lambda: [line for line in read_lines(sqlite_env.out / "second.log") if line[0] == "start"],
                        what="the second job")
    began = float(start[1])
    assert began >= float(first[0][1]) + 1.5  # not before the worker's next look, a poll interval on
    assert began <= submitted + 1.5 + SLACK
    assert w.stop() == 0
