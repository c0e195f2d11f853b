"""The ready line (angos.ready): logged once, when the server answers, and true when logged.

- A real ``angos server``: the line names the URL; the moment it is in the log,
  ``/readyz`` answers 200; a reload that replaces every worker does not log it
  again.
- The pipe itself: however many workers report, the master logs one line.
- Which URL is shown for loopback, wildcard and TLS listeners.
"""

from __future__ import annotations

import logging
import re
import signal

import pytest
import requests

from angos.config import build_config, merge
from angos.ready import ReadyLine, ready_line, ready_url

from .conftest import wait_for


def _cfg(**server) -> object:
    base = {"server": {"bind_address": "127.0.0.1", **server}, "blob_store": {"fs": {"root_dir": "/tmp/angos-ready"}}}
    return build_config(merge(base, {}))


def test_a_loopback_listener_is_shown_as_is():
    assert ready_line(_cfg(port=8123)) == "ready on http://127.0.0.1:8123"


@pytest.mark.parametrize("bind, url", [("0.0.0.0", "http://127.0.0.1:8000"), ("::", "http://[::1]:8000")])
def test_a_wildcard_bind_is_shown_as_loopback_with_where_it_listens(bind, url):
    cfg = _cfg(bind_address=bind)
    assert ready_url(cfg) == url
    assert ready_line(cfg) == f"ready on {url} (listening on {bind} port 8000)"


def test_tls_is_https(tmp_path):
    cfg = _cfg(tls={"server_certificate_bundle": str(tmp_path / "c.pem"), "server_private_key": str(tmp_path / "k.pem")})
    assert ready_url(cfg) == "https://127.0.0.1:8000"


def test_many_workers_reporting_make_one_line(caplog):
    line = ReadyLine(_cfg(port=8124))
    with caplog.at_level(logging.INFO, logger="angos.server"):
        line.start()
        for _ in range(5):
            line.worker_up()
        wait_for(lambda: caplog.records, timeout=10, what="the ready line")
        # A sixth report after the line: still one line once the pipe has been read again.
        line.worker_up()
        line.worker_up()
        wait_for(lambda: _drained(line), timeout=10, what="the pipe to be drained")
    assert [r.getMessage() for r in caplog.records] == ["ready on http://127.0.0.1:8124"]


def _drained(line: ReadyLine) -> bool:
    import select

    return not select.select([line._read], [], [], 0)[0]


def test_the_server_logs_ready_once_when_it_answers_and_not_again_on_reload(angos_factory):
    server = angos_factory(start=False)
    server.start(wait=False)
    line = re.compile(rf"ready on http://127\.0\.0\.1:{server.port}\b")
    wait_for(lambda: line.search(server.logs()), timeout=60, what="the ready line")
    assert requests.get(server.url + "/readyz", timeout=10).status_code == 200
    old = set(wait_for(server.worker_pids, what="the workers"))
    server.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: (pids := set(server.worker_pids())) and not pids & old and len(pids) == len(old),
             timeout=60, what="every worker replaced by the reload")
    assert requests.get(server.url + "/healthz", timeout=10).status_code == 200
    assert len(line.findall(server.logs())) == 1
