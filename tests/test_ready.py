"""The ready line (angos.ready): logged once, when the server answers, and true when logged.

- Against a real ``angos server``: the line names the URL, ``/readyz`` answers
  200 the moment it is in the log, and it is there once.
- Against a small HTTP stand-in on 127.0.0.1 (a real socket, answers chosen by
  the test), the states an angos server rarely shows at start: ``503`` first
  (one warning with the reason, then the ready line once it answers 200), and a
  policy that wants credentials for ``/readyz`` (``answering on``).
- Which URL is probed and shown for loopback, wildcard and TLS listeners.
"""

from __future__ import annotations

import http.server
import logging
import re
import threading

import pytest
import requests

from angos import ready
from angos.config import build_config, merge

from .conftest import wait_for


def _cfg(**server) -> object:
    base = {"server": {"bind_address": "127.0.0.1", **server}, "blob_store": {"fs": {"root_dir": "/tmp/angos-ready"}}}
    return build_config(merge(base, {}))


def test_loopback_is_probed_and_shown_as_is():
    assert ready.probe_target(_cfg(port=8123)) == ("http://127.0.0.1:8123", "127.0.0.1", 8123, False)
    assert ready.describe(_cfg(port=8123)) == ""


@pytest.mark.parametrize("bind, url", [("0.0.0.0", "http://127.0.0.1:8000"), ("::", "http://[::1]:8000")])
def test_a_wildcard_bind_is_probed_on_loopback_and_says_where_it_listens(bind, url):
    cfg = _cfg(bind_address=bind)
    assert ready.probe_target(cfg)[0] == url
    assert ready.describe(cfg) == f" (listening on {bind} port 8000)"


class _Stand(http.server.BaseHTTPRequestHandler):
    answers: list[int] = []

    def do_GET(self):  # noqa: N802 (http.server's name)
        status = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        body = b'{"reason": "storage: not yet"}' if status == 503 else b"{}"
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def stand():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Stand)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_not_ready_warns_once_with_the_reason_then_logs_ready(stand, caplog):
    _Stand.answers = [503, 503, 503, 200]
    port = stand.server_address[1]
    with caplog.at_level(logging.INFO, logger="angos.server"):
        line = ready.watch(_cfg(port=port))
    assert line == f"ready on http://127.0.0.1:{port}"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [f"not ready yet on http://127.0.0.1:{port}: /readyz answered 503 "
                        '{"reason": "storage: not yet"}']
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.INFO] == [line]


def test_a_policy_that_wants_credentials_for_readyz_gives_answering_on(stand, caplog):
    _Stand.answers = [401]
    port = stand.server_address[1]
    with caplog.at_level(logging.INFO, logger="angos.server"):
        line = ready.watch(_cfg(port=port))
    assert line.startswith(f"answering on http://127.0.0.1:{port} (/readyz answered 401")


def test_nothing_listening_gives_up_after_its_patience(monkeypatch, caplog):
    """Bounded: a clock that jumps past PATIENCE ends the probe with one warning (no real waiting)."""
    from .conftest import free_port

    ticks = iter([0.0, 0.0, ready.PATIENCE + 1])
    with caplog.at_level(logging.INFO, logger="angos.server"):
        assert ready.watch(_cfg(port=free_port()), clock=lambda: next(ticks), sleep=lambda s: None) is None
    assert [r.levelno for r in caplog.records] == [logging.WARNING]


def test_the_server_logs_ready_once_when_readyz_answers(angos_factory):
    server = angos_factory(start=False)
    server.start(wait=False)
    line = re.compile(rf"ready on http://127\.0\.0\.1:{server.port}\b")
    wait_for(lambda: line.search(server.logs()), timeout=60, what="the ready line")
    assert requests.get(server.url + "/readyz", timeout=10).status_code == 200
    assert len(line.findall(server.logs())) == 1
