"""The registry token flow over HTTP: challenges, ``GET /token``, Bearer requests, keys shared by servers.

One deny-by-default server for most tests: ``public/*`` is readable by anyone,
``alice`` may do anything, ``bob`` is identified but may only call ``/v2/``,
and every caller may call ``/v2/`` (so the challenge of a credential-less
``/v2/`` is shown to come before the policy). Tokens in the past or from the
previous signing period are made in-process against the server's own store
(:class:`angos.auth.token.TokenService` with a clock), which is what another
server sharing that store, or the same server earlier, would have issued.
Real clients (skopeo, podman, docker, oras-py) are in test_token_clients.py.
"""

from __future__ import annotations

import base64
import calendar
import json
import time

import pytest
import requests

from angos.auth.identity import Identity
from angos.auth.token import TokenService
from angos.config import load_config
from angos.storage import FsStore

from ..api.helpers import assert_oci_error
from .conftest import Client, base_config, identity_toml, uniq

POLICY = """
[global.access_policy]
default = "deny"
rules = [
  "request.action in ['get-manifest', 'get-blob', 'list-tags', 'get-referrers'] && request.namespace.startsWith('public/')",
  "request.action == 'get-api-version'",
  "identity.id == 'alice'",
]
"""
ROTATING = "\n[auth.token]\nkey_rotation_days = 1\nlifetime_secs = 86400\n"


@pytest.fixture(scope="module")
def server(module_server):
    return module_server(identity_toml(alice="alice-pw", bob="bob-pw") + POLICY + ROTATING, workers=2)


@pytest.fixture(scope="module")
def images(server):
    alice = Client(server.url, "alice", "alice-pw")
    public, private = f"public/{uniq('app')}", f"private/{uniq('app')}"
    return {"public": (public, alice.push_image(public, "v1")[0]),
            "private": (private, alice.push_image(private, "v1")[0])}


def get_token(server, auth=None, **params) -> requests.Response:
    return requests.get(f"{server.url}/token", auth=auth, params=params, timeout=30)


def token_of(server, auth=None) -> str:
    r = get_token(server, auth, service="angos")
    assert r.status_code == 200, r.text
    return r.json()["token"]


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def part(token: str, i: int) -> dict:
    p = token.split(".")[i]
    return json.loads(base64.urlsafe_b64decode(p + "=" * (-len(p) % 4)))


def counters(server, name: str) -> dict[str, float]:
    out = {}
    text = requests.get(server.url + "/metrics", auth=("alice", "alice-pw"), timeout=30).text
    for line in text.splitlines():
        if line.startswith(name + "{"):
            out[line.split('result="')[1].split('"')[0]] = float(line.rsplit(" ", 1)[1])
    return out


def delta(before: dict, after: dict) -> dict:
    return {k: after.get(k, 0.0) - before.get(k, 0.0) for k in set(before) | set(after)
            if after.get(k, 0.0) != before.get(k, 0.0)}


def in_process_tokens(server, clock) -> TokenService:
    """What another server sharing this one's store (or this one at ``clock``) would issue."""
    cfg = load_config([str(server.config_path)])
    return TokenService(cfg, FsStore(cfg.blob_store.fs.root_dir), clock)


# ---------------------------------------------------------------- challenges


def test_a_credential_less_v2_is_challenged_with_bearer_even_where_the_policy_would_allow_it(server):
    r = requests.get(f"{server.url}/v2/", timeout=30)
    assert_oci_error(r, 401, "UNAUTHORIZED")
    assert r.headers["WWW-Authenticate"] == f'Bearer realm="{server.url}/token",service="angos"'
    assert r.headers["Docker-Distribution-API-Version"] == "registry/2.0"
    # empty basic credentials are no credentials: challenged the same way
    assert requests.get(f"{server.url}/v2/", headers={"Authorization": "Basic Og=="}, timeout=30).status_code == 401
    # with a token, even an anonymous one, the policy decides (here: everyone may call /v2/)
    for auth in (None, ("bob", "bob-pw")):
        assert requests.get(f"{server.url}/v2/", headers=bearer(token_of(server, auth)), timeout=30).status_code == 200
    assert requests.get(f"{server.url}/v2/", auth=("bob", "bob-pw"), timeout=30).status_code == 200  # basic too


@pytest.mark.parametrize("method, path, scope", [
    ("GET", "{private}/manifests/v1", "repository:{private}:pull"),
    ("HEAD", "{private}/blobs/sha256:" + "0" * 64, "repository:{private}:pull"),
    ("GET", "{private}/tags/list", "repository:{private}:pull"),
    ("POST", "{public}/blobs/uploads/", "repository:{public}:pull,push"),
    ("PUT", "{public}/manifests/v2", "repository:{public}:pull,push"),
    ("DELETE", "{public}/manifests/v1", "repository:{public}:delete"),
    ("GET", "_catalog", "registry:catalog:*"),
])
def test_a_refused_anonymous_request_names_its_scope_in_the_challenge(server, images, method, path, scope):
    names = {"public": images["public"][0], "private": images["private"][0]}
    r = requests.request(method, f"{server.url}/v2/{path.format(**names)}", timeout=30)
    assert r.status_code == 401
    assert r.headers["WWW-Authenticate"] == (f'Bearer realm="{server.url}/token",service="angos",'
                                             f'scope="{scope.format(**names)}"')


def test_a_name_that_is_not_an_oci_name_never_reaches_the_challenge_header(server):
    r = requests.get(f"{server.url}/v2/Bad%22Name/manifests/v1", timeout=30)
    assert r.status_code == 401
    assert r.headers["WWW-Authenticate"] == f'Bearer realm="{server.url}/token",service="angos"'


def test_outside_v2_the_challenge_stays_basic_for_browsers_and_scripts(server):
    # (/metrics answers 127.0.0.1 without credentials: server.metrics_allow's default.)
    for path in ("/_ext/_repositories", "/_ext/_replication/downstreams"):
        r = requests.get(server.url + path, timeout=30)
        assert r.status_code == 401 and r.headers["WWW-Authenticate"].startswith('Basic realm="'), path


def test_a_registry_no_policy_can_refuse_does_not_challenge(module_server):
    open_server = module_server(identity_toml(alice="alice-pw"), policy="allow")
    assert requests.get(f"{open_server.url}/v2/", timeout=30).status_code == 200


# ---------------------------------------------------------------- GET /token


def test_an_anonymous_token_request_gets_a_short_lived_token_naming_nobody(server):
    before = counters(server, "auth_token_requests_total")
    r = get_token(server, service="angos", scope="repository:public/x:pull")
    assert r.status_code == 200 and r.headers["Cache-Control"] == "no-store"
    doc = r.json()
    assert doc["token"] == doc["access_token"] and doc["expires_in"] == 86400
    issued = calendar.timegm(time.strptime(doc["issued_at"], "%Y-%m-%dT%H:%M:%SZ"))
    assert abs(issued - time.time()) < 600
    assert part(doc["token"], 0)["alg"] == "HS256" and "sub" not in part(doc["token"], 1)
    # skopeo and podman send empty basic credentials to the realm as well: anonymous too
    r = requests.get(f"{server.url}/token", headers={"Authorization": "Basic Og=="}, timeout=30)
    assert r.status_code == 200 and "sub" not in part(r.json()["token"], 1)
    assert delta(before, counters(server, "auth_token_requests_total")) == {"anonymous": 2.0}


def test_a_token_request_with_basic_credentials_names_the_identity(server):
    before = counters(server, "auth_token_requests_total")
    token = token_of(server, ("alice", "alice-pw"))
    assert (part(token, 1)["sub"], part(token, 1)["name"]) == ("alice", "alice")
    for auth in (("alice", "wrong"), ("mallory", "x"), ("alice", "")):  # an empty password is a wrong one
        r = get_token(server, auth)
        assert_oci_error(r, 401, "UNAUTHORIZED")
        assert r.headers["WWW-Authenticate"].startswith('Basic realm="')  # the realm takes basic credentials
    assert delta(before, counters(server, "auth_token_requests_total")) == {"identified": 1.0, "failure": 3.0}


@pytest.mark.parametrize("params, code", [
    ({"scope": "repository:../etc:pull"}, "NAME_INVALID"),
    ({"scope": "repository:Upper/Case:pull"}, "NAME_INVALID"),
    ({"scope": "nonsense"}, "UNSUPPORTED"),
    ({"scope": " ".join(f"repository:a/n{i}:pull" for i in range(17))}, "UNSUPPORTED"),
])
def test_token_request_scopes_are_checked_and_bounded(server, params, code):
    assert_oci_error(get_token(server, **params), 400, code)


def test_token_request_accepts_what_clients_send(server):
    params = [("service", "angos"), ("scope", "repository:public/a:pull"), ("scope", "repository:b/c:pull,push"),
              ("scope", "registry:catalog:*"), ("account", "alice"), ("client_id", "docker"),
              ("offline_token", "true")]
    r = requests.get(f"{server.url}/token", params=params, auth=("alice", "alice-pw"), timeout=30)
    assert r.status_code == 200 and part(r.json()["token"], 1)["sub"] == "alice"


def test_a_token_is_not_exchanged_for_another(server):
    r = requests.get(f"{server.url}/token", headers=bearer(token_of(server)), timeout=30)
    assert_oci_error(r, 401, "UNAUTHORIZED")
    r = post_token(server, grant_type="refresh_token", refresh_token=token_of(server), service="angos")
    assert_oci_error(r, 400, "UNSUPPORTED")  # not as a refresh token either


def post_token(server, **form) -> requests.Response:
    return requests.post(f"{server.url}/token", data=form, timeout=30)


def test_the_oauth2_password_grant_is_a_token_request_with_the_credentials_in_a_form(server, images):
    # What containerd sends when it has credentials (remotes/docker/auth.FetchTokenWithOAuth).
    before = counters(server, "auth_token_requests_total")
    form = {"grant_type": "password", "service": "angos", "client_id": "containerd-client",
            "scope": "repository:private/a:pull repository:b/c:pull,push"}
    r = post_token(server, username="alice", password="alice-pw", **form)
    assert r.status_code == 200 and r.headers["Cache-Control"] == "no-store", r.text
    doc = r.json()
    assert doc["access_token"] == doc["token"] and doc["expires_in"] == 86400
    assert part(doc["access_token"], 1)["sub"] == "alice"
    private, digest = images["private"]
    r = requests.get(f"{server.url}/v2/{private}/manifests/{digest}", headers=bearer(doc["access_token"]),
                     timeout=30)
    assert r.status_code == 200
    r = post_token(server, username="alice", password="wrong", **form)
    assert_oci_error(r, 401, "UNAUTHORIZED")
    assert delta(before, counters(server, "auth_token_requests_total")) == {"identified": 1.0, "failure": 1.0}


@pytest.mark.parametrize("form, status, code", [
    ({"grant_type": "password", "username": "alice"}, 400, "UNSUPPORTED"),
    ({"grant_type": "password", "password": "alice-pw"}, 400, "UNSUPPORTED"),
    ({"grant_type": "password", "username": "alice:alice", "password": "pw"}, 400, "UNSUPPORTED"),
    ({"grant_type": "client_credentials", "username": "alice", "password": "alice-pw"}, 400, "UNSUPPORTED"),
    ({"username": "alice", "password": "alice-pw"}, 400, "UNSUPPORTED"),
    ({"grant_type": "password", "username": "alice", "password": "alice-pw", "scope": "repository:../x:pull"},
     400, "NAME_INVALID"),
    ({"grant_type": "password", "username": "alice", "password": "alice-pw" + "x" * 9000}, 413, "SIZE_INVALID"),
])
def test_malformed_oauth2_token_requests_are_refused_clearly(server, form, status, code):
    assert_oci_error(post_token(server, **form), status, code)


def test_an_oauth2_token_request_is_a_small_form(server):
    r = requests.post(f"{server.url}/token", json={"grant_type": "password", "username": "alice",
                                                   "password": "alice-pw"}, timeout=30)
    assert_oci_error(r, 415, "UNSUPPORTED")


# ---------------------------------------------------------------- Bearer requests


def test_bearer_tokens_are_their_identity_and_the_policy_decides(server, images):
    (public, pub_digest), (private, priv_digest) = images["public"], images["private"]
    anon, alice, bob = token_of(server), token_of(server, ("alice", "alice-pw")), token_of(server, ("bob", "bob-pw"))
    get = lambda ns, tok: requests.get(f"{server.url}/v2/{ns}/manifests/v1", headers=bearer(tok), timeout=30)  # noqa: E731
    assert get(public, anon).headers["Docker-Content-Digest"] == pub_digest
    r = get(private, anon)
    assert_oci_error(r, 401, "UNAUTHORIZED")  # anonymous, token or not: challenged
    assert r.headers["WWW-Authenticate"].endswith(f'scope="repository:{private}:pull"')
    assert_oci_error(get(private, bob), 403, "DENIED")  # identified: refused outright
    assert get(private, alice).headers["Docker-Content-Digest"] == priv_digest
    # alice pushes with her token alone
    pusher = Client(server.url)
    pusher.s.headers.update(bearer(alice))
    digest, _ = pusher.push_image(f"private/{uniq('pushed')}", "v1")
    assert digest.startswith("sha256:")


def test_empty_basic_credentials_are_anonymous_not_invalid(server, images):
    (public, digest), (private, _) = images["public"], images["private"]
    empty = {"Authorization": "Basic Og=="}
    r = requests.get(f"{server.url}/v2/{public}/manifests/v1", headers=empty, timeout=30)
    assert r.status_code == 200 and r.headers["Docker-Content-Digest"] == digest
    r = requests.get(f"{server.url}/v2/{private}/manifests/v1", headers=empty, timeout=30)
    assert_oci_error(r, 401, "UNAUTHORIZED")
    assert "invalid credentials" not in r.text
    r = requests.get(f"{server.url}/v2/{public}/manifests/v1", auth=("alice", ""), timeout=30)
    assert_oci_error(r, 401, "UNAUTHORIZED")  # a user with an empty password is a wrong password
    assert "invalid credentials" in r.text


def test_an_expired_token_is_refused_and_the_client_is_challenged_again(server, images):
    private = images["private"][0]
    before = counters(server, "auth_token_verifications_total")
    old, _, _ = in_process_tokens(server, lambda: time.time() - 2 * 86400).issue(Identity(id="alice",
                                                                                         username="alice"))
    r = requests.get(f"{server.url}/v2/{private}/manifests/v1", headers=bearer(old), timeout=30)
    assert_oci_error(r, 401, "UNAUTHORIZED")
    assert r.headers["WWW-Authenticate"].startswith(f'Bearer realm="{server.url}/token"')
    assert delta(before, counters(server, "auth_token_verifications_total")) == {"expired": 1.0}


def test_a_token_of_the_previous_signing_key_works_until_it_expires(server, images):
    private, digest = images["private"]
    now = time.time()
    period_start = now - now % 86400
    # signed ten seconds before this period began, by the previous period's key, live for a day
    old, _, _ = in_process_tokens(server, lambda: period_start - 10).issue(Identity(id="alice", username="alice"))
    current = token_of(server, ("alice", "alice-pw"))
    kid_start = lambda tok: int(part(tok, 0)["kid"].split("-")[0])  # noqa: E731 - "<period start>-<days>"
    assert kid_start(old) == kid_start(current) - 86400  # rotated: two keys
    for _ in range(3):  # both workers, whether they had the old key in memory or not
        r = requests.get(f"{server.url}/v2/{private}/manifests/v1", headers=bearer(old), timeout=30)
        assert r.status_code == 200 and r.headers["Docker-Content-Digest"] == digest


def test_forged_and_tampered_tokens_are_refused(server, images):
    private = images["private"][0]
    anon = token_of(server)
    h, p, s = anon.split(".")
    claims = {**part(anon, 1), "sub": "alice", "name": "alice"}
    tampered = f"{h}.{base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b'=').decode()}.{s}"
    none_alg = base64.urlsafe_b64encode(json.dumps({**part(anon, 0), "alg": "none"}).encode()).rstrip(b"=").decode()
    before = counters(server, "auth_token_verifications_total")
    for bad in (tampered, f"{none_alg}.{tampered.split('.')[1]}.", anon[:-4] + "AAAA", "some.jwt.token"):
        r = requests.get(f"{server.url}/v2/{private}/manifests/v1", headers=bearer(bad), timeout=30)
        assert_oci_error(r, 401, "UNAUTHORIZED")
    assert delta(before, counters(server, "auth_token_verifications_total")) == {"invalid": 4.0}


# ---------------------------------------------------------------- servers and settings


def test_two_servers_sharing_storage_accept_each_others_tokens(module_server, server, images):
    private, digest = images["private"]
    data = load_config([str(server.config_path)]).blob_store.fs.root_dir
    twin = module_server(config_text=base_config(data, "@PORT@", 1)
                         + identity_toml(alice="alice-pw", bob="bob-pw") + POLICY + ROTATING)
    from_a, from_b = token_of(server, ("alice", "alice-pw")), token_of(twin, ("alice", "alice-pw"))
    assert part(from_a, 0)["kid"] == part(from_b, 0)["kid"]  # one key per period for both
    for srv, tok in ((twin, from_a), (server, from_b)):
        r = requests.get(f"{srv.url}/v2/{private}/manifests/v1", headers=bearer(tok), timeout=30)
        assert r.status_code == 200 and r.headers["Docker-Content-Digest"] == digest


def test_wrong_passwords_at_the_token_endpoint_are_throttled_like_anywhere_else(module_server):
    srv = module_server(identity_toml(alice="alice-pw") + POLICY
                        + '\n[auth]\nmax_failures_per_source = 3\nfailure_window = "1h"\n')
    for _ in range(2):
        assert get_token(srv, ("alice", "wrong")).status_code == 401
    # The OAuth2 form of the request spends the same budget.
    assert post_token(srv, grant_type="password", username="alice", password="wrong").status_code == 401
    r = get_token(srv, ("alice", "alice-pw"))  # right, but not remembered: this address spent its budget
    assert_oci_error(r, 429, "TOOMANYREQUESTS")
    assert int(r.headers["Retry-After"]) >= 1
    assert_oci_error(post_token(srv, grant_type="password", username="alice", password="alice-pw"), 429,
                     "TOOMANYREQUESTS")
    assert get_token(srv).status_code == 200  # anonymous tokens run no argon2 and are not throttled


def test_the_realm_follows_a_trusted_proxy_and_can_be_set(module_server):
    proxied = module_server('[global]\ntrusted_proxies = ["127.0.0.1/32"]\n' + POLICY)
    fwd = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "registry.example.com"}
    r = requests.get(f"{proxied.url}/v2/", headers=fwd, timeout=30)
    assert r.headers["WWW-Authenticate"] == 'Bearer realm="https://registry.example.com/token",service="angos"'
    direct = module_server(POLICY)  # the same headers from a peer that is not a trusted proxy: ignored
    r = requests.get(f"{direct.url}/v2/", headers=fwd, timeout=30)
    assert r.headers["WWW-Authenticate"] == f'Bearer realm="{direct.url}/token",service="angos"'
    r = requests.get(f"{direct.url}/v2/", headers={"Host": 'evil"host'}, timeout=30)
    assert r.headers["WWW-Authenticate"] == f'Bearer realm="{direct.url}/token",service="angos"'
    fixed = module_server(POLICY + '\n[auth.token]\nrealm = "https://registry.example.com/token"\n'
                          'service = "registry.example.com"\n')
    r = requests.get(f"{fixed.url}/v2/", timeout=30)
    assert r.headers["WWW-Authenticate"] == ('Bearer realm="https://registry.example.com/token",'
                                             'service="registry.example.com"')
    assert part(token_of(fixed), 1)["aud"] == "registry.example.com"
