"""Probes and /metrics under a deny-by-default policy (angos.api.gate).

- ``/healthz`` and ``/readyz`` answer anyone, without credentials and whatever credentials
  are sent (wrong ones included), while the policy still refuses everything else;
- ``/metrics`` answers clients in ``server.metrics_allow`` (default: loopback) without
  credentials. A client elsewhere (here a real TCP connection from 127.0.0.2, which is on the
  loopback interface but not in ``127.0.0.1/32``, or a client a trusted proxy forwards for) gets
  the policy's answer: 401 anonymous, 403 for an identity the policy refuses, 200 for one it
  allows the ``metrics`` action;
- ``metrics_allow = []`` leaves /metrics to the policy for everyone.
"""

from __future__ import annotations

import base64
import http.client

import pytest
import requests

from .conftest import identity_toml

POLICY = """
[global.access_policy]
default = "deny"
rules = ['identity.username == "prometheus" && request.action == "metrics"']
"""


def _get(server, path: str, source: str = "127.0.0.1", auth: tuple[str, str] | None = None,
         headers: dict | None = None) -> int:
    """GET over a connection made from ``source`` (a real peer address, not a header)."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30, source_address=(source, 0))
    hdrs = dict(headers or {}, Connection="close")
    if auth is not None:
        hdrs["Authorization"] = "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
    try:
        conn.request("GET", path, headers=hdrs)
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


@pytest.fixture(scope="module")
def deny_server(module_server):
    return module_server(POLICY + identity_toml(prometheus="scrape-pw", alice="alice-pw")
                         + '[global]\ntrusted_proxies = ["127.0.0.1/32"]\n', workers=2)


@pytest.mark.parametrize("path", ["/healthz", "/readyz"])
def test_probes_answer_anonymous_and_wrong_credentials_under_deny_by_default(deny_server, path):
    assert _get(deny_server, path) == 200
    assert _get(deny_server, path, source="127.0.0.2") == 200
    assert _get(deny_server, path, auth=("alice", "wrong password")) == 200
    assert requests.head(deny_server.url + path, timeout=30).status_code == 200
    # The policy still decides everything else.
    assert _get(deny_server, "/v2/_catalog") == 401


def test_metrics_from_an_allowed_network_need_no_credentials(deny_server):
    r = requests.get(deny_server.url + "/metrics", timeout=30)
    assert r.status_code == 200
    assert "http_requests_total" in r.text


def test_metrics_from_elsewhere_get_the_policys_answer(deny_server):
    assert _get(deny_server, "/metrics", source="127.0.0.2") == 401
    assert _get(deny_server, "/metrics", source="127.0.0.2", auth=("alice", "alice-pw")) == 403
    assert _get(deny_server, "/metrics", source="127.0.0.2", auth=("prometheus", "scrape-pw")) == 200


def test_a_client_forwarded_by_a_trusted_proxy_is_judged_by_its_own_address(deny_server):
    forwarded = {"X-Forwarded-For": "203.0.113.7"}
    assert _get(deny_server, "/metrics", headers=forwarded) == 401
    assert _get(deny_server, "/metrics", headers=forwarded, auth=("prometheus", "scrape-pw")) == 200
    assert _get(deny_server, "/metrics", headers={"X-Forwarded-For": "127.0.0.1"}) == 200


def test_an_empty_metrics_allow_leaves_metrics_to_the_policy(module_server):
    server = module_server(config_text='[server]\nbind_address = "127.0.0.1"\nport = @PORT@\nworkers = 1\n'
                           'metrics_allow = []\n\n[blob_store.fs]\nroot_dir = "@DATA@"\n'
                           + POLICY + identity_toml(prometheus="scrape-pw"))
    assert _get(server, "/metrics") == 401
    assert _get(server, "/metrics", auth=("prometheus", "scrape-pw")) == 200
    assert _get(server, "/healthz") == 200
