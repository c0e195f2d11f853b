"""Webhook authorization against a real server and a real HTTP service on 127.0.0.1.

The service (:class:`Receiver`, a threaded ``http.server``) records every call's path and headers
and answers per namespace: a status, or a function of the call's headers (200 when unset); calls to
a held path wait until it is released (``/slow``: until the module ends). One server (one gunicorn worker, so one decision cache) has
a global webhook and repositories that override it:

- ``main`` (global): cache_ttl 60 s, forwards ``X-Tenant``, authenticates with a bearer token;
- ``other/*`` → ``short`` (cache_ttl 1 s); ``fresh/*`` → ``fresh`` (cache_ttl 0);
  ``slow/*`` → ``slow`` (timeout_ms 300 against a service that never answers in time);
  ``held/*`` → ``held`` (timeout_ms 30000, cache_ttl 0; the test releases the service);
  ``gate/*`` → ``gate`` (timeout_ms 30000, cache_ttl 60; held like ``held``, for concurrent requests);
  ``trickle/*`` → ``trickle`` (timeout_ms 500 against a service sending its headers a byte at a time);
  ``open/*`` → none (``authorization_webhook = ""``).

The global policy allows everything but ``celdeny/*``. Every test works in namespaces of its own,
so the shared cache never links two tests; counts of calls are read after the request that made
them has been answered (the call happens inside the request, so none can still be on its way).
"""

from __future__ import annotations

import json
import os
import re
import ssl
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from ..conftest import skopeo, wait_for
from .conftest import OCI_MANIFEST, Client, identity_toml, make_pki, oci_layout, uniq


class Receiver:
    """A tiny authorization service: records calls, answers per namespace, holds calls to the
    paths in ``holds`` until their event is set."""

    def __init__(self, tls: ssl.SSLContext | None = None):
        self.calls: list[tuple[str, object, str | None]] = []  # (path, headers, client certificate CN)
        self.answers: dict[str | None, object] = {}
        self.holds: dict[str, threading.Event] = {"/slow": threading.Event()}
        self._lock = threading.Lock()
        recv = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive: Angos reuses its pooled connections

            def do_GET(self):
                cert = self.connection.getpeercert() if tls is not None else None
                cn = dict(x[0] for x in cert["subject"]).get("commonName") if cert else None
                with recv._lock:
                    recv.calls.append((self.path, self.headers, cn))
                if self.path == "/trickle":
                    return self._trickle()
                held = recv.holds.get(self.path)
                if held is not None:
                    held.wait(60)  # far beyond the webhook's timeout_ms, unless the test releases it
                answer = recv.answers.get(self.headers.get("X-Registry-Namespace"), 200)
                status = answer(self.headers) if callable(answer) else answer
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def _trickle(self):
                # A byte every 50 ms: each read gets data well within any read timeout, so only a
                # bound on the whole call stops waiting for the end of the headers.
                self.wfile.write(b"HTTP/1.1 200 OK\r\nX-Pad: ")
                for _ in range(1200):
                    if recv.holds["/slow"].wait(0.05):
                        break
                    try:
                        self.wfile.write(b"x")
                        self.wfile.flush()
                    except OSError:
                        break  # Angos gave up and closed the connection
                self.close_connection = True

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.httpd.handle_error = lambda request, address: None  # refused TLS handshakes are expected
        if tls is not None:
            self.httpd.socket = tls.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        self.scheme = "https" if tls is not None else "http"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def url(self, path: str) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}{path}"

    def seen(self, path: str | None = None, ns: str | None = None) -> list:
        """Headers of the calls to ``path`` (any path when None) about namespace ``ns``."""
        with self._lock:
            return [h for p, h, _ in self.calls if (path is None or p == path)
                    and (ns is None or h.get("X-Registry-Namespace") == ns)]

    def stop(self) -> None:
        for held in self.holds.values():
            held.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def receiver():
    r = Receiver()
    yield r
    r.stop()


HOOKS = """
[global]
authorization_webhook = "main"

[global.access_policy]
default = "allow"
rules = ["has(request.namespace) && request.namespace.startsWith('celdeny/')"]

[auth.webhook.main]
url = "{main}"
timeout_ms = 5000
cache_ttl = 60
forward_headers = ["X-Tenant"]
bearer_token = "hook-s3cret"

[auth.webhook.short]
url = "{short}"
timeout_ms = 5000
cache_ttl = 1

[auth.webhook.fresh]
url = "{fresh}"
timeout_ms = 5000
cache_ttl = 0

[auth.webhook.slow]
url = "{slow}"
timeout_ms = 300

[repository."other"]
authorization_webhook = "short"

[repository."fresh"]
authorization_webhook = "fresh"

[repository."slow"]
authorization_webhook = "slow"

[auth.webhook.held]
url = "{held}"
timeout_ms = 30000
cache_ttl = 0

[repository."held"]
authorization_webhook = "held"

[auth.webhook.gate]
url = "{gate}"
timeout_ms = 30000
cache_ttl = 60

[repository."gate"]
authorization_webhook = "gate"

[auth.webhook.trickle]
url = "{trickle}"
timeout_ms = 500

[repository."trickle"]
authorization_webhook = "trickle"

[repository."open"]
authorization_webhook = ""
"""


@pytest.fixture(scope="module")
def server(module_server, receiver):
    hooks = HOOKS.format(**{n: receiver.url("/" + n) for n in ("main", "short", "fresh", "slow", "held", "gate", "trickle")})
    return module_server(identity_toml(alice="alice-pw") + hooks, workers=1)


@pytest.fixture
def alice(server):
    return Client(server.url, "alice", "alice-pw")


def metric(server, name: str, **labels) -> float:
    """One sample of ``name`` on /metrics (0 when absent). Reading it is itself a request the global
    webhook is asked about, which moves only ``main``'s allow counters."""
    text = requests.get(server.url + "/metrics", auth=("alice", "alice-pw"), timeout=30).text
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        m = re.fullmatch(r"([a-z_]+)\{(.*)\} (\S+)", line)
        if m and m.group(1) == name and ",".join(sorted(m.group(2).split(","))) == want:
            return float(m.group(3))
    return 0.0


def in_flight(server) -> float:
    text = requests.get(server.url + "/metrics", auth=("alice", "alice-pw"), timeout=30).text
    return float(re.search(r"^http_requests_in_flight (\S+)$", text, re.M).group(1))


def results(server, webhook: str) -> dict[str, float]:
    return {r: metric(server, "auth_webhook_requests_total", webhook=webhook, result=r)
            for r in ("allow", "deny", "unavailable", "transport_error", "cached_allow", "cached_deny")}


def delta(before: dict, after: dict) -> dict:
    return {k: after[k] - before[k] for k in after if after[k] != before[k]}


# ---------------------------------------------------------------- decisions


def test_an_allowing_webhook_lets_a_push_and_a_pull_through_and_is_asked_about_each_action(server, receiver, alice):
    ns = f"team/{uniq('allow')}"
    digest, body = alice.push_image(ns, "v1")
    r = alice.get(f"{ns}/manifests/v1", headers={"Accept": OCI_MANIFEST})
    assert r.status_code == 200 and r.content == body
    actions = {h.get("X-Registry-Action") for h in receiver.seen("/main", ns)}
    assert {"start-upload", "put-manifest", "get-manifest"} <= actions, actions


@pytest.mark.parametrize("status", [401, 403])
def test_a_denying_webhook_answers_403_to_identified_callers_and_401_to_anonymous_ones(server, receiver, alice,
                                                                                         status):
    ns = f"team/{uniq(f'deny{status}')}"
    receiver.answers[ns] = status
    r = alice.get(f"{ns}/tags/list")
    assert r.status_code == 403 and r.json()["errors"][0]["code"] == "DENIED"
    r = requests.get(server.v2(f"{ns}/tags/list"), timeout=30)
    assert r.status_code == 401
    assert r.headers["WWW-Authenticate"].startswith("Bearer realm=")
    r = alice.post(f"{ns}/blobs/uploads/")
    assert r.status_code == 403  # nothing is started


def test_a_policy_deny_never_calls_the_webhook(server, receiver, alice):
    ns = f"celdeny/{uniq('cel')}"
    assert alice.get(f"{ns}/tags/list").status_code == 403
    assert requests.get(server.v2(f"{ns}/tags/list"), timeout=30).status_code == 401
    assert receiver.seen(ns=ns) == []


@pytest.mark.parametrize("status", [500, 503, 429, 404, 302])
def test_an_answer_that_is_no_decision_denies_and_is_not_remembered(server, receiver, alice, status):
    ns = f"team/{uniq(f'fail{status}')}"
    receiver.answers[ns] = status
    before = results(server, "main")
    for _ in range(2):
        r = alice.get(f"{ns}/tags/list")
        assert r.status_code == 403, r.text
    assert len(receiver.seen("/main", ns)) == 2  # asked again: the failure was not cached
    assert delta(before, results(server, "main")).get("unavailable") == 2
    receiver.answers[ns] = 200  # the service recovers: the next request goes through
    r = alice.get(f"{ns}/tags/list")
    assert r.status_code == 404 and r.json()["errors"][0]["code"] == "NAME_UNKNOWN"
    assert len(receiver.seen("/main", ns)) == 3


def test_a_webhook_that_does_not_answer_in_time_denies(server, receiver, alice):
    ns = f"slow/{uniq('hang')}"
    before = results(server, "slow")
    # The service holds the call for 60 s; timeout_ms is 300, and the client gives up after 30 s.
    r = alice.get(f"{ns}/tags/list")
    assert r.status_code == 403
    assert len(receiver.seen("/slow", ns)) == 1
    assert delta(before, results(server, "slow")) == {"transport_error": 1}
    wait_for(lambda: "authorization webhook 'slow': no answer (timed out after 300 ms)" in server.logs(),
             timeout=10, what="the fail-closed warning")


def test_timeout_ms_bounds_the_whole_call_even_when_the_service_keeps_sending(server, receiver, alice):
    ns = f"trickle/{uniq('trickle')}"
    before = results(server, "trickle")
    r = alice.get(f"{ns}/tags/list")  # the service would take a minute to finish its headers
    assert r.status_code == 403
    assert len(receiver.seen("/trickle", ns)) == 1
    assert delta(before, results(server, "trickle")) == {"transport_error": 1}


def test_a_waiting_webhook_call_does_not_hold_up_other_requests(server, receiver, alice):
    # One gunicorn worker: if the call blocked it, the second request could not be served until the
    # first one's webhook answered (never, before the release below).
    ns, other = f"held/{uniq('wait')}", f"team/{uniq('meanwhile')}"
    receiver.holds["/held"] = release = threading.Event()
    first: dict = {}
    waiting = threading.Thread(target=lambda: first.setdefault("r", alice.get(f"{ns}/tags/list")), daemon=True)
    waiting.start()
    try:
        wait_for(lambda: receiver.seen("/held", ns), timeout=30, what="the held webhook call")
        assert Client(server.url, "alice", "alice-pw").get(f"{other}/tags/list").status_code == 404
        assert "r" not in first  # still waiting for its webhook while the other request was served
    finally:
        release.set()
    waiting.join(30)
    assert first["r"].status_code == 404  # the late 200 allowed it


def _concurrently(server, receiver, ns: str, n: int) -> list:
    """``n`` identical requests by alice, all in the server while the gate webhook's call is held;
    the call is then released. Returns their statuses."""
    # alice's password is verified now, so that in the burst each request is past authentication
    # (a cache hit, which never waits) the moment it is counted in flight: the only place left for
    # it to wait is the webhook call.
    assert Client(server.url, "alice", "alice-pw").get("").status_code == 200
    receiver.holds["/gate"] = release = threading.Event()
    with ThreadPoolExecutor(n) as pool:
        try:
            futures = [pool.submit(lambda: Client(server.url, "alice", "alice-pw").get(f"{ns}/tags/list"))
                       for _ in range(n)]
            wait_for(lambda: receiver.seen("/gate", ns), timeout=30, what="the gate webhook call")
            # Every request is being served (the +1 is the scrape asking): each is waiting for the call.
            wait_for(lambda: in_flight(server) >= n + 1, timeout=30, what=f"{n} requests in flight")
        finally:
            release.set()
        return [f.result(timeout=60).status_code for f in futures]


@pytest.mark.parametrize("answer, status, counted", [
    (200, 404, {"allow": 1, "cached_allow": 19}),  # allowed: the namespace is empty
    (403, 403, {"deny": 1, "cached_deny": 19}),
    (503, 403, {"unavailable": 20}),               # no decision: every waiter is denied, fail closed
])
def test_concurrent_identical_requests_share_one_call(server, receiver, answer, status, counted):
    ns = f"gate/{uniq('flight')}"
    receiver.answers[ns] = answer
    before = results(server, "gate")
    assert _concurrently(server, receiver, ns, 20) == [status] * 20
    assert len(receiver.seen("/gate", ns)) == 1
    assert delta(before, results(server, "gate")) == counted
    # A shared decision is remembered like any other; a shared failure is not, so the next request asks.
    receiver.answers[ns] = 200
    again = Client(server.url, "alice", "alice-pw").get(f"{ns}/tags/list").status_code
    if answer == 503:
        assert (again, len(receiver.seen("/gate", ns))) == (404, 2)
    else:
        assert (again, len(receiver.seen("/gate", ns))) == (status, 1)


def test_an_unreachable_webhook_denies_and_the_log_keeps_its_secrets(module_server, alice_hash_config):
    port = _closed_port()
    server = module_server(alice_hash_config + f"""
[global]
authorization_webhook = "gone"

[auth.webhook.gone]
url = "http://127.0.0.1:{port}/authorize?key=url-s3cret"
bearer_token = "hook-s3cret"
""", workers=1)
    who = Client(server.url, "alice", "alice-pw")
    assert who.get(f"team/{uniq('gone')}/tags/list").status_code == 403
    wait_for(lambda: "authorization webhook 'gone': no answer (connection failed)" in server.logs(),
             timeout=10, what="the fail-closed warning")
    logs = server.logs()
    assert "url-s3cret" not in logs and "hook-s3cret" not in logs and "alice-pw" not in logs


@pytest.fixture(scope="module")
def alice_hash_config():
    return identity_toml(alice="alice-pw")


def _closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------- caching


def test_the_probes_and_a_scrape_from_metrics_allow_are_not_asked_about(server, receiver):
    # No policy is asked about them either: a webhook outage must not fail every replica's probes.
    asked = len(receiver.seen())
    for path in ("/healthz", "/readyz", "/metrics"):  # /metrics from loopback, server.metrics_allow's default
        assert requests.get(server.url + path, timeout=30).status_code == 200, path
    assert len(receiver.seen()) == asked


def test_a_decision_is_remembered_within_cache_ttl(server, receiver, alice):
    allowed, denied = f"team/{uniq('hit')}", f"team/{uniq('hitdeny')}"
    receiver.answers[denied] = 403
    before = results(server, "main")
    for _ in range(3):
        assert alice.get(f"{allowed}/tags/list").status_code == 404
        assert alice.get(f"{denied}/tags/list").status_code == 403
    assert len(receiver.seen("/main", allowed)) == 1
    assert len(receiver.seen("/main", denied)) == 1
    moved = delta(before, results(server, "main"))
    assert moved["deny"] == 1 and moved["cached_deny"] == 2
    # allow counts also the /metrics reads' own decisions (namespace-less, global webhook)
    assert moved["cached_allow"] >= 2 and moved["allow"] >= 1


def test_a_remembered_decision_expires_after_cache_ttl(server, receiver, alice):
    ns = f"other/{uniq('ttl')}"  # the "short" webhook: cache_ttl = 1
    assert alice.get(f"{ns}/tags/list").status_code == 404
    assert len(receiver.seen("/short", ns)) == 1
    time.sleep(1.5)  # the behaviour under test: the one-second cache_ttl running out
    assert alice.get(f"{ns}/tags/list").status_code == 404
    assert len(receiver.seen("/short", ns)) == 2


def test_cache_ttl_0_asks_on_every_request_and_each_call_is_timed(server, receiver, alice):
    ns = f"fresh/{uniq('fresh')}"
    calls = metric(server, "auth_webhook_duration_seconds_count", webhook="fresh")
    for _ in range(3):
        assert alice.get(f"{ns}/tags/list").status_code == 404
    assert len(receiver.seen("/fresh", ns)) == 3
    assert metric(server, "auth_webhook_duration_seconds_count", webhook="fresh") - calls == 3


def test_forwarded_headers_reach_the_webhook_and_are_part_of_the_cache_key(server, receiver, alice):
    ns = f"team/{uniq('tenant')}"
    receiver.answers[ns] = lambda h: 200 if h.get("X-Tenant") == "blue" else 403
    for _ in range(2):
        assert alice.get(f"{ns}/tags/list", headers={"X-Tenant": "blue"}).status_code == 404
    assert alice.get(f"{ns}/tags/list", headers={"X-Tenant": "green"}).status_code == 403
    assert alice.get(f"{ns}/tags/list").status_code == 403  # no X-Tenant at all
    assert [h.get("X-Tenant") for h in receiver.seen("/main", ns)] == ["blue", "green", None]


# ---------------------------------------------------------------- what the webhook sees


def test_the_call_carries_the_request_fields_the_identity_and_the_webhooks_own_credentials(server, receiver, alice):
    ns = f"team/{uniq('payload')}"
    r = alice.get(f"{ns}/manifests/v1", headers={"X-Tenant": "blue", "X-Other": "not-listed"})
    assert r.status_code == 404
    h, = receiver.seen("/main", ns)
    assert h.get("X-Registry-Action") == "get-manifest"
    assert h.get("X-Registry-Namespace") == ns and h.get("X-Registry-Reference") == "v1"
    assert h.get("X-Registry-Identity-ID") == "alice" and h.get("X-Registry-Username") == "alice"
    assert h.get("X-Forwarded-For") == "127.0.0.1"
    assert h.get("X-Forwarded-Method") == "GET" and h.get("X-Forwarded-Proto") == "http"
    assert h.get("X-Forwarded-Host") == server.host and h.get("X-Forwarded-Uri") == f"/v2/{ns}/manifests/v1"
    assert h.get("X-Tenant") == "blue" and h.get("X-Other") is None
    assert h.get("Authorization") == "Bearer hook-s3cret"  # the webhook's token, never the client's credentials
    assert h.get("X-Registry-Certificate-CN") is None and h.get("X-Registry-Digest") is None

    assert alice.get(f"{ns}/tags/list", params={"n": 5, "last": "a"}).status_code == 404
    h = receiver.seen("/main", ns)[-1]
    assert (h.get("X-Registry-Action"), h.get("X-Registry-N"), h.get("X-Registry-Last")) == ("list-tags", "5", "a")

    anon = f"team/{uniq('anon')}"
    assert requests.get(server.v2(f"{anon}/tags/list"), timeout=30).status_code == 404
    h, = receiver.seen("/main", anon)
    assert h.get("X-Registry-Identity-ID") is None and h.get("X-Registry-Username") is None


def test_a_by_digest_push_with_tags_sends_them_as_a_json_list(server, receiver, alice):
    ns = f"team/{uniq('tags')}"
    digest, body = alice.push_image(ns, "first")
    receiver.answers[ns] = lambda h: 403 if '"blocked"' in (h.get("X-Registry-Tags") or "") else 200
    r = alice.put(f"{ns}/manifests/{digest}", params=[("tag", "v2"), ("tag", "blocked")], data=body,
                  headers={"Content-Type": OCI_MANIFEST})
    assert r.status_code == 403
    assert receiver.seen("/main", ns)[-1].get("X-Registry-Tags") == '["v2","blocked"]'
    assert alice.get(f"{ns}/manifests/blocked").status_code == 404  # nothing was tagged


def test_a_mount_cannot_read_a_namespace_the_webhook_refuses(server, receiver, alice):
    src, dst, ok = (f"team/{uniq(p)}" for p in ("src", "dst", "oksrc"))
    data = os.urandom(64)
    d = alice.push_blob(src, data)
    alice.push_blob(ok, data)
    receiver.answers[src] = lambda h: 403 if h.get("X-Registry-Action") == "get-blob" else 200
    r = alice.post(f"{dst}/blobs/uploads/", params={"mount": d, "from": src})
    assert r.status_code == 202  # an ordinary upload session instead of the mount
    assert [h.get("X-Registry-Digest") for h in receiver.seen("/main", src)
            if h.get("X-Registry-Action") == "get-blob"] == [d]
    r = alice.post(f"{dst}/blobs/uploads/", params={"mount": d, "from": ok})
    assert r.status_code == 201


# ---------------------------------------------------------------- which webhook


def test_a_repository_webhook_replaces_the_global_one_and_an_empty_name_turns_it_off(server, receiver, alice):
    other, opened = f"other/{uniq('o')}", f"open/{uniq('o')}"
    receiver.answers[opened] = 403  # would refuse, if it were asked
    assert alice.get(f"{other}/tags/list").status_code == 404
    assert len(receiver.seen("/short", other)) == 1 and receiver.seen("/main", other) == []
    assert alice.get(f"{opened}/tags/list").status_code == 404
    assert receiver.seen(ns=opened) == []


def test_a_configuration_reload_applies_new_webhook_settings(module_server, receiver):
    server = module_server(f"""
[global]
authorization_webhook = "live"

[auth.webhook.live]
url = "{receiver.url('/before')}"
cache_ttl = 0
""", workers=1)
    ns = f"team/{uniq('reload')}"
    assert requests.get(server.v2(f"{ns}/tags/list"), timeout=30).status_code == 404
    assert len(receiver.seen("/before", ns)) == 1
    text = server.config_path.read_text().replace("/before", "/after")
    tmp = server.config_path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, server.config_path)
    wait_for(lambda: requests.get(server.v2(f"{ns}/tags/list"), timeout=30).status_code == 404
             and receiver.seen("/after", ns), timeout=60, what="a call to the reloaded webhook URL")


def test_an_oidc_caller_is_described_by_its_provider_and_claims(module_server, receiver, issuer_server, oidc_pki):
    issuer = issuer_server().issuer("ci")
    server = module_server(f"""
[global]
authorization_webhook = "claims"

[auth.webhook.claims]
url = "{receiver.url('/claims')}"

[auth.oidc.ci]
issuer = "{issuer.url}"
required_audience = "angos-test"
server_ca_bundle = "{oidc_pki.ca}"
""", workers=1)
    ns, other = f"team/{uniq('oidc')}", f"team/{uniq('oidc-no')}"
    receiver.answers[other] = lambda h: 403 if '"repository":"org/app"' in h.get("X-Registry-OIDC-Claims", "") else 200
    token = issuer.token(repository="org/app")
    r = requests.get(server.v2(f"{ns}/tags/list"), headers={"Authorization": f"Bearer {token}"}, timeout=30)
    assert r.status_code == 404
    h, = receiver.seen("/claims", ns)
    assert h.get("X-Registry-OIDC-Provider") == "ci"
    claims = json.loads(h.get("X-Registry-OIDC-Claims"))
    assert claims["repository"] == "org/app" and claims["iss"] == issuer.url and claims["aud"] == "angos-test"
    assert h.get("X-Registry-Identity-ID") is None  # an OIDC subject is never an [auth.identity] id
    r = requests.get(server.v2(f"{other}/tags/list"), auth=("ci", token), timeout=30)  # the JWT as a password
    assert r.status_code == 403


# ---------------------------------------------------------------- TLS and real clients


def test_a_webhook_behind_tls_with_a_client_certificate(module_server, tmp_path):
    pki = make_pki(tmp_path / "pki")
    cert, key = pki.client("angos-webhook-client", "registry")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(pki.server_cert, pki.server_key)
    ctx.load_verify_locations(pki.ca)
    ctx.verify_mode = ssl.CERT_REQUIRED
    tls = Receiver(tls=ctx)
    try:
        server = module_server(f"""
[auth.webhook.mtls]
url = "{tls.url('/mtls')}"
server_ca_bundle = "{pki.ca}"
client_certificate_bundle = "{cert}"
client_private_key = "{key}"

[auth.webhook.nocert]
url = "{tls.url('/nocert')}"
server_ca_bundle = "{pki.ca}"

[auth.webhook.untrusted]
url = "{tls.url('/untrusted')}"
client_certificate_bundle = "{cert}"
client_private_key = "{key}"

[repository."mtls"]
authorization_webhook = "mtls"

[repository."nocert"]
authorization_webhook = "nocert"

[repository."untrusted"]
authorization_webhook = "untrusted"
""", workers=1)
        ns = f"mtls/{uniq('t')}"
        assert requests.get(server.v2(f"{ns}/tags/list"), timeout=30).status_code == 404
        assert [cn for p, _, cn in tls.calls if p == "/mtls"] == ["angos-webhook-client"]
        # No client certificate: the service refuses the handshake. A server certificate from a CA
        # the webhook does not trust (the system's bundle): Angos refuses it. Both deny.
        assert requests.get(server.v2(f"nocert/{uniq('t')}/tags/list"), timeout=30).status_code == 401
        assert requests.get(server.v2(f"untrusted/{uniq('t')}/tags/list"), timeout=30).status_code == 401
        assert [p for p, _, _ in tls.calls if p != "/mtls"] == []
        wait_for(lambda: "authorization webhook 'untrusted': no answer (TLS error)" in server.logs(),
                 timeout=10, what="the TLS failure's warning")
    finally:
        tls.stop()


def test_a_missing_ca_bundle_stops_start_up_with_one_line(module_server, tmp_path):
    server = module_server(f"""
[auth.webhook.broken]
url = "https://127.0.0.1:1/authorize"
server_ca_bundle = "{tmp_path}/missing.pem"
""", workers=1, start=False)
    server.start(wait=False)
    assert server.proc.wait(60) != 0
    assert server.logs().strip().splitlines() == [
        f"angos: auth.webhook.broken.server_ca_bundle: cannot load '{tmp_path}/missing.pem': No such file or directory"]


def test_skopeo_copies_through_an_allowing_webhook_and_is_stopped_by_a_refusing_one(server, receiver, tmp_path):
    oci_layout(tmp_path / "src", "v1")
    ns, refused = f"team/{uniq('skopeo')}", f"team/{uniq('skopeo-no')}"
    skopeo("copy", "--dest-tls-verify=false", "--dest-creds", "alice:alice-pw", f"oci:{tmp_path / 'src'}:v1",
           f"docker://{server.host}/{ns}:v1")
    skopeo("copy", "--src-tls-verify=false", "--src-creds", "alice:alice-pw", f"docker://{server.host}/{ns}:v1",
           f"oci:{tmp_path / 'out'}:v1")
    seen = receiver.seen("/main", ns)
    assert {"put-manifest", "get-manifest"} <= {h.get("X-Registry-Action") for h in seen}
    assert {h.get("X-Registry-Identity-ID") for h in seen} == {"alice"}  # the token flow keeps the identity
    receiver.answers[refused] = lambda h: 403 if h.get("X-Registry-Action") == "put-manifest" else 200
    res = skopeo("copy", "--dest-tls-verify=false", "--dest-creds", "alice:alice-pw", f"oci:{tmp_path / 'src'}:v1",
                 f"docker://{server.host}/{refused}:v1", check=False)
    assert res.returncode != 0
    assert Client(server.url, "alice", "alice-pw").get(f"{refused}/manifests/v1").status_code == 404
