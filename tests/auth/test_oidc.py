"""OIDC identities end to end: a real server, local HTTPS issuers, tokens as Basic passwords and Bearer values.

One deny-by-default server (one worker, so one process holds each provider's keys and the
issuers' fetch counters show exactly what it asked) with a provider per concern:

- ``ci``: a generic issuer with ``required_audience``, found by discovery; its callers may call
  ``/v2/`` and push under ``open/``.
- ``github-actions`` (``provider = "github"`` with the issuer moved to the fixture): GitHub-shaped
  tokens push under ``myorg/`` only when their ``repository`` claim starts with ``myorg/``.
- ``k8s``: Kubernetes service-account-shaped tokens (``kubernetes.io`` claims), keys from an
  explicit ``jwks_uri`` (no discovery): service account ``builder`` of namespace ``ci`` pushes
  under ``k8s/ci/``.
- ``strict`` (``required_claims``), ``rotating`` and ``ghosts`` (key rotation and unknown
  ``kid`` refreshes, counted at the issuer), ``mtls`` and ``mtls-nocert`` (an issuer that
  requires a client certificate, with and without one), ``down`` (nothing listens).

The issuers, the HTTPS server and the RSA keys are tests/auth/oidc_issuer.py. Verification
caching and scheduled refreshes are checked in-process against the same kind of issuer at the
end, with the clocks as parameters.
"""

from __future__ import annotations

import base64
import json
import time

import pytest
import requests

from angos.auth.oidc import OidcError, OidcVerifier
from angos.config import load_config_text

from ..api.helpers import assert_oci_error
from ..conftest import free_port, skopeo
from .conftest import Client, identity_toml, oci_layout, uniq
from .oidc_issuer import hmac_with_public_key, unsigned_token

POLICY = """
[global.access_policy]
default = "deny"
rules = [
  "identity.oidc != null && request.action == 'get-api-version'",
  "identity.oidc != null && !(identity.oidc.provider in ['github-actions', 'k8s']) && has(request.namespace) && request.namespace.startsWith('open/')",
  "identity.oidc != null && identity.oidc.provider == 'github-actions' && identity.oidc.claims['repository'].startsWith('myorg/') && has(request.namespace) && request.namespace.startsWith('myorg/')",
  "identity.oidc != null && identity.oidc.provider == 'k8s' && identity.oidc.claims['kubernetes.io']['namespace'] == 'ci' && identity.oidc.claims['kubernetes.io']['serviceaccount']['name'] == 'builder' && has(request.namespace) && request.namespace.startsWith('k8s/ci/')",
  "identity.id == 'admin'",
]
"""


@pytest.fixture(scope="module")
def issuers(issuer_server):
    plain, mutual = issuer_server(), issuer_server(require_client_cert=True)
    out = {name: plain.issuer(name) for name in ("ci", "github", "k8s", "strict", "rotating", "ghosts")}
    out["mtls"] = mutual.issuer("mtls")
    out["mtls-nocert"] = mutual.issuer("mtls-nocert")
    return out


@pytest.fixture(scope="module")
def down_url() -> str:
    return f"https://127.0.0.1:{free_port()}/down"  # nothing listens there


@pytest.fixture(scope="module")
def server(module_server, issuers, oidc_pki, down_url):
    ca = f'server_ca_bundle = "{oidc_pki.ca}"'
    cert, key = oidc_pki.client("angos-registry", "Registry")
    aud = 'required_audience = "angos-test"'
    extra = f"""
[auth.oidc.ci]
issuer = "{issuers['ci'].url}"
{aud}
{ca}

[auth.oidc.github-actions]
provider = "github"
issuer = "{issuers['github'].url}"
{aud}
{ca}

[auth.oidc.k8s]
issuer = "{issuers['k8s'].url}"
jwks_uri = "{issuers['k8s'].url}/jwks"
{aud}
{ca}

[auth.oidc.strict]
issuer = "{issuers['strict'].url}"
required_claims = {{ repository_owner = ["myorg", "partner"] }}
{ca}

[auth.oidc.rotating]
issuer = "{issuers['rotating'].url}"
{ca}

[auth.oidc.ghosts]
issuer = "{issuers['ghosts'].url}"
{ca}

[auth.oidc.mtls]
issuer = "{issuers['mtls'].url}"
client_certificate_bundle = "{cert}"
client_private_key = "{key}"
{ca}

[auth.oidc.mtls-nocert]
issuer = "{issuers['mtls-nocert'].url}"
{ca}

[auth.oidc.down]
issuer = "{down_url}"
{ca}
"""
    return module_server(identity_toml(admin="admin-pw") + extra + POLICY, workers=1)


def oidc_counts(server) -> dict[tuple[str, str], float]:
    out = {}
    text = requests.get(server.url + "/metrics", auth=("admin", "admin-pw"), timeout=30).text
    for line in text.splitlines():
        if line.startswith("auth_oidc_verifications_total{"):
            labels, value = line.rsplit(" ", 1)
            parts = dict(p.split("=", 1) for p in labels[labels.index("{") + 1:-1].split(","))
            out[(parts["provider"].strip('"'), parts["result"].strip('"'))] = float(value)
    return out


def delta(before: dict, after: dict) -> dict:
    return {k: after.get(k, 0.0) - before.get(k, 0.0) for k in set(before) | set(after)
            if after.get(k, 0.0) != before.get(k, 0.0)}


def v2(server, auth=None, headers=None) -> requests.Response:
    return requests.get(f"{server.url}/v2/", auth=auth, headers=headers, timeout=30)


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def payload(token: str) -> dict:
    part = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


def github_claims(issuer, repository: str = "myorg/app", **extra) -> dict:
    owner = repository.split("/")[0]
    return issuer.claims(sub=f"repo:{repository}:ref:refs/heads/main", repository=repository, repository_owner=owner,
                         ref="refs/heads/main", workflow="release.yml", actor="octocat", run_attempt="1", **extra)


def k8s_claims(issuer, namespace: str = "ci", account: str = "builder") -> dict:
    return issuer.claims(sub=f"system:serviceaccount:{namespace}:{account}", **{"kubernetes.io": {
        "namespace": namespace, "serviceaccount": {"name": account, "uid": "5c1d-0001"},
        "pod": {"name": "build-7f9c", "uid": "9a2b-0002"}}})


# ---------------------------------------------------------------- accepted tokens


def test_a_valid_token_identifies_the_caller_as_basic_password_and_as_bearer(server, issuers):
    token = issuers["ci"].token()
    before = oidc_counts(server)
    assert v2(server, auth=("ci", token)).status_code == 200
    assert v2(server, headers=bearer(token)).status_code == 200
    Client(server.url, "ci", token).push_image(f"open/{uniq('ci')}", "v1")  # 2 blobs + 1 manifest
    assert v2(server).status_code == 401  # nothing: anonymous, challenged
    assert delta(before, oidc_counts(server)) == {("ci", "valid"): 5.0}
    assert issuers["ci"].discovery_fetches == 1 and issuers["ci"].jwks_fetches == 1  # keys fetched once


def test_keys_from_an_explicit_jwks_uri_need_no_discovery(server, issuers):
    assert v2(server, auth=("k8s", issuers["k8s"].token(k8s_claims(issuers["k8s"])))).status_code == 200
    assert issuers["k8s"].discovery_fetches == 0 and issuers["k8s"].jwks_fetches == 1


def test_the_token_endpoint_turns_an_oidc_login_into_a_registry_token_with_the_same_identity(server, issuers):
    gh = issuers["github"]
    oidc_token = gh.token(github_claims(gh, "myorg/app", exp=int(time.time()) + 120))
    r = requests.get(f"{server.url}/token", auth=("github-actions", oidc_token), params={"service": "angos"},
                     timeout=30)
    assert r.status_code == 200, r.text
    registry_token = r.json()["token"]
    carried = payload(registry_token)["oidc"]
    assert carried["p"] == "github-actions" and carried["c"] == payload(oidc_token)
    assert r.json()["expires_in"] <= 120 + 60  # never beyond the OIDC token (plus the clock skew tolerance)
    client = Client(server.url)
    client.s.headers.update(bearer(registry_token))
    client.push_image(f"myorg/{uniq('app')}", "v1")  # the policy reads the claims the registry token carries
    assert_oci_error(client.post(f"otherorg/{uniq('app')}/blobs/uploads/"), 403, "DENIED")
    # An OIDC token may be presented to the token endpoint as a bearer value too.
    r = requests.get(f"{server.url}/token", headers=bearer(oidc_token), timeout=30)
    assert r.status_code == 200 and payload(r.json()["token"])["oidc"]["p"] == "github-actions"
    # A registry token is still never exchanged for another.
    assert requests.get(f"{server.url}/token", headers=bearer(registry_token), timeout=30).status_code == 401


def test_a_token_near_the_length_limit_works_as_basic_password_bearer_value_and_registry_token(server, issuers):
    # Big tokens are real (long group lists, names in any script). The OIDC token here is just under
    # the 8192 characters accepted, its claims in UTF-8 as many issuers write them. As a Basic password
    # its header is ~11 KB, beyond the common 8190-byte limit; the registry token issued for it carries
    # the same claims, and with \u escapes (six bytes for each of these two-byte Cyrillic letters)
    # would outgrow the 16384 characters a registry token may have.
    gh = issuers["github"]
    claims = github_claims(gh, "myorg/app", groups=[])
    while len(gh.token(claims, utf8=True)) < 8000:
        claims["groups"].append(f"команда-разработки-{len(claims['groups']):04d}")
    oidc_token = gh.token(claims, utf8=True)
    assert 8000 <= len(oidc_token) <= 8192
    assert v2(server, auth=("github-actions", oidc_token)).status_code == 200
    assert v2(server, headers=bearer(oidc_token)).status_code == 200
    r = requests.get(f"{server.url}/token", auth=("github-actions", oidc_token), timeout=30)
    assert r.status_code == 200, r.text
    registry_token = r.json()["token"]
    assert payload(registry_token)["oidc"]["c"]["groups"] == claims["groups"]
    client = Client(server.url)
    client.s.headers.update(bearer(registry_token))
    client.push_image(f"myorg/{uniq('big')}", "v1")


# ---------------------------------------------------------------- refused tokens


def _refusals(issuers):
    ci, gh, strict = issuers["ci"], issuers["github"], issuers["strict"]
    now = int(time.time())
    return {
        "expired": ("ci", lambda: ci.token(ci.claims(exp=now - 120)), "expired", "token expired"),
        "not-yet-valid": ("ci", lambda: ci.token(ci.claims(nbf=now + 600)), "invalid", "not valid yet"),
        "issued-in-the-future": ("ci", lambda: ci.token(ci.claims(iat=now + 600)), "invalid", "not valid yet"),
        "wrong-audience": ("ci", lambda: ci.token(audience="another-service"), "wrong_claims", "audience"),
        "no-audience": ("ci", lambda: ci.token(audience=None), "wrong_claims", "'aud'"),
        "wrong-issuer": ("ci", lambda: ci.token(ci.claims(iss="https://elsewhere.example.com")), "wrong_claims",
                         "issuer is not"),
        "another-provider-s-token": ("ci", lambda: gh.token(), "wrong_claims", "issuer is not"),
        "missing-required-claim": ("strict", lambda: strict.token(), "wrong_claims", "'repository_owner'"),
        "wrong-required-claim": ("strict", lambda: strict.token(repository_owner="evil"), "wrong_claims",
                                 "'repository_owner'"),
        "alg-none": ("ci", lambda: unsigned_token(ci.claims()), "invalid", "algorithm 'none' is not allowed"),
        "hs256-with-public-key": ("ci", lambda: hmac_with_public_key(ci, ci.claims()), "invalid",
                                  "algorithm 'HS256' is not allowed"),
        "bad-signature": ("ci", lambda: ci.token().rsplit(".", 1)[0] + "." + gh.token().rsplit(".", 1)[1],
                          "invalid", "bad token signature"),
        "no-expiry": ("ci", lambda: ci.token(ci.claims(exp=None)), "invalid", "'exp'"),
        "garbage": ("ci", lambda: "not-a-jwt", "invalid", "malformed token"),
    }


@pytest.mark.parametrize("case", ["expired", "not-yet-valid", "issued-in-the-future", "wrong-audience",
                                  "no-audience", "wrong-issuer", "another-provider-s-token",
                                  "missing-required-claim", "wrong-required-claim",
                                  "alg-none", "hs256-with-public-key", "bad-signature", "no-expiry", "garbage"])
def test_a_token_that_fails_a_check_is_refused_with_401_and_counted(server, issuers, case):
    provider, make, result, words = _refusals(issuers)[case]
    token = make()
    before = oidc_counts(server)
    r = v2(server, auth=(provider, token))
    doc = assert_oci_error(r, 401, "UNAUTHORIZED")
    message = doc["errors"][0]["message"]
    assert words in message, message
    assert all(part not in r.text for part in token.split(".") if len(part) > 8)  # the token never echoes back
    assert delta(before, oidc_counts(server)) == {(provider, result): 1.0}
    assert not any(token in line for line in server.logs().splitlines())


def test_a_bearer_token_of_an_issuer_nobody_configured_is_refused(server, issuers):
    from .oidc_issuer import Issuer

    stranger = Issuer("https://127.0.0.1:1", "stranger")
    r = v2(server, headers=bearer(stranger.token()))
    assert_oci_error(r, 401, "UNAUTHORIZED")
    assert "neither a token of this registry nor one of a configured OIDC issuer" in r.text


def test_an_unknown_kid_triggers_exactly_one_refresh_then_fails(server, issuers):
    ghosts = issuers["ghosts"]
    assert v2(server, auth=("ghosts", ghosts.token())).status_code == 200
    assert ghosts.jwks_fetches == 1
    before = oidc_counts(server)
    first, second = ghosts.unpublished_key(), ghosts.unpublished_key()
    r = v2(server, auth=("ghosts", ghosts.token(kid=first)))
    assert_oci_error(r, 401, "UNAUTHORIZED")
    assert ghosts.jwks_fetches == 2  # the key set was fetched again in case the issuer had rotated
    assert_oci_error(v2(server, headers=bearer(ghosts.token(kid=second))), 401, "UNAUTHORIZED")
    assert ghosts.jwks_fetches == 2  # made-up kids cannot make the registry hammer the issuer
    assert delta(before, oidc_counts(server)) == {("ghosts", "unknown_key"): 2.0}


def test_rotated_keys_are_accepted_after_a_refresh(server, issuers):
    rotating = issuers["rotating"]
    old_kid = rotating.kid
    old = rotating.token()
    assert v2(server, auth=("rotating", old)).status_code == 200
    rotating.rotate()  # the issuer now publishes only a new key
    assert v2(server, headers=bearer(rotating.token())).status_code == 200
    assert rotating.jwks_fetches == 2
    assert v2(server, auth=("rotating", old)).status_code == 200  # verified before: remembered until it expires
    r = v2(server, auth=("rotating", rotating.token(kid=old_kid)))  # a new token with the withdrawn key
    assert_oci_error(r, 401, "UNAUTHORIZED")
    assert rotating.jwks_fetches == 2


def test_an_issuer_requiring_a_client_certificate_is_reached_with_the_configured_one(server, issuers):
    assert v2(server, auth=("mtls", issuers["mtls"].token())).status_code == 200
    assert issuers["mtls"].jwks_fetches == 1
    before = oidc_counts(server)
    r = v2(server, auth=("mtls-nocert", issuers["mtls-nocert"].token()))  # same issuer server, no certificate
    assert_oci_error(r, 503, "UNAVAILABLE")  # the token may be fine: the registry could not check it
    assert issuers["mtls-nocert"].discovery_fetches == 0  # the handshake itself failed
    assert delta(before, oidc_counts(server)) == {("mtls-nocert", "unavailable"): 1.0}


def test_an_unreachable_issuer_answers_503_not_401(server, down_url):
    from .oidc_issuer import Issuer

    fake = Issuer(down_url.rsplit("/", 1)[0], "down")  # its keys, which the registry can never fetch
    r = v2(server, auth=("down", fake.token()))
    assert_oci_error(r, 503, "UNAVAILABLE")
    assert "OIDC provider unavailable" in r.text


# ---------------------------------------------------------------- policies on claims


@pytest.mark.parametrize("repository, allowed", [("myorg/app", True), ("myorg/tools", True),
                                                 ("evilorg/app", False), ("myorg-fork/app", False)])
def test_a_github_token_pushes_only_where_its_repository_claim_allows(server, issuers, repository, allowed):
    gh = issuers["github"]
    client = Client(server.url, "github-actions", gh.token(github_claims(gh, repository)))
    r = client.post(f"myorg/{uniq('app')}/blobs/uploads/")
    assert r.status_code == (202 if allowed else 403), r.text


@pytest.mark.parametrize("namespace, account, target, allowed", [
    ("ci", "builder", "k8s/ci", True),
    ("ci", "default", "k8s/ci", False),   # another service account of the namespace
    ("prod", "builder", "k8s/ci", False),  # the same account name in another namespace
    ("ci", "builder", "k8s/prod", False),  # outside the namespace the rule grants
])
def test_a_kubernetes_token_pushes_only_as_the_namespace_and_service_account_the_policy_names(
        server, issuers, namespace, account, target, allowed):
    k8s = issuers["k8s"]
    client = Client(server.url, "k8s", k8s.token(k8s_claims(k8s, namespace, account)))
    r = client.post(f"{target}/{uniq('app')}/blobs/uploads/")
    assert r.status_code == (202 if allowed else 403), r.text


def test_skopeo_pushes_with_the_provider_name_and_a_jwt_as_credentials(server, issuers, tmp_path):
    gh = issuers["github"]
    digest = oci_layout(tmp_path / "layout", "v1")
    ref = f"myorg/{uniq('skopeo')}:v1"
    skopeo("copy", "--dest-tls-verify=false", "--dest-creds", f"github-actions:{gh.token(github_claims(gh))}",
           f"oci:{tmp_path / 'layout'}:v1", f"docker://{server.host}/{ref}")
    r = Client(server.url, "admin", "admin-pw").head(ref.replace(":", "/manifests/"))
    assert r.status_code == 200 and r.headers["Docker-Content-Digest"] == digest
    other = f"myorg/{uniq('skopeo')}:v1"
    refused = skopeo("copy", "--dest-tls-verify=false", "--dest-creds",
                     f"github-actions:{gh.token(github_claims(gh, 'evilorg/app'))}", f"oci:{tmp_path / 'layout'}:v1",
                     f"docker://{server.host}/{other}", check=False)
    # Logged in (the token is valid), then refused by the policy: 403 on its first look at the repository.
    assert refused.returncode != 0 and "403 (forbidden)" in refused.stderr.lower(), refused.stderr
    assert Client(server.url, "admin", "admin-pw").head(other.replace(":", "/manifests/")).status_code == 404


# ---------------------------------------------------------------- in-process: cache and refresh


class Clock:
    def __init__(self, now: float):
        self.now = now

    def __call__(self) -> float:
        return self.now


def verifier(issuer, ca, extra: str = "", **clocks) -> OidcVerifier:
    cfg = load_config_text(f"""
[server]
bind_address = "127.0.0.1"
[blob_store.fs]
root_dir = "/nonexistent"
[auth.oidc.ci]
issuer = "{issuer.url}"
server_ca_bundle = "{ca}"
{extra}
""")
    return OidcVerifier(cfg.auth.oidc, **clocks)


def test_a_verified_token_is_remembered_until_it_expires_then_refused(issuer_server, oidc_pki):
    issuer = issuer_server().issuer("cache")
    now = time.time()
    clock = Clock(now)
    v = verifier(issuer, oidc_pki.ca, clock=clock)
    token = issuer.token(issuer.claims(exp=int(now) + 100))
    first = v.verify_basic("ci", token)
    issuer.rotate()  # even with its key withdrawn, the remembered answer stands until exp
    assert v.verify_bearer(token) == first and v.verify_basic("ci", token) == first
    assert issuer.jwks_fetches == 1
    clock.now = now + 100 + 60  # exp plus the clock skew tolerance
    with pytest.raises(OidcError) as err:
        v.verify_basic("ci", token)
    assert err.value.reason == "expired"


def test_the_remembered_tokens_are_bounded(issuer_server, oidc_pki, monkeypatch):
    from angos.auth import oidc

    monkeypatch.setattr(oidc, "MAX_CACHE", 3)
    issuer = issuer_server().issuer("bounded")
    v = verifier(issuer, oidc_pki.ca)
    for _ in range(5):
        v.verify_basic("ci", issuer.token())
    assert len(v._cache) == 3


def test_the_key_set_is_fetched_again_after_jwks_refresh_interval(issuer_server, oidc_pki):
    issuer = issuer_server().issuer("scheduled")
    mono = Clock(1000.0)
    v = verifier(issuer, oidc_pki.ca, "jwks_refresh_interval = 600", monotonic=mono)
    v.verify_basic("ci", issuer.token())
    mono.now += 599
    v.verify_basic("ci", issuer.token())
    assert issuer.jwks_fetches == 1
    mono.now += 1
    v.verify_basic("ci", issuer.token())
    assert issuer.jwks_fetches == 2 and issuer.discovery_fetches == 2  # discovery is asked again too


def test_an_issuer_that_goes_away_leaves_its_keys_in_use_and_is_asked_again_after_a_pause(
        issuer_server, oidc_pki, caplog):
    from angos.auth.oidc_keys import RETRY_AFTER

    server = issuer_server()
    issuer = server.issuer("outage")
    mono = Clock(1000.0)
    # An explicit jwks_uri, so every refresh is one fetch of the key set, counted even when it fails.
    v = verifier(issuer, oidc_pki.ca, f'jwks_refresh_interval = 600\njwks_uri = "{issuer.url}/jwks"', monotonic=mono)
    keys = v.keys["ci"]
    v.verify_basic("ci", issuer.token())
    assert keys.fetches == 1
    server.stop()  # the issuer goes away (connections are refused from now on)
    mono.now += 600  # the held set is due for its scheduled refresh, which fails
    caplog.set_level("WARNING", logger="angos.auth.oidc")
    assert v.verify_basic("ci", issuer.token()).provider == "ci"  # new tokens still verify with the held keys
    assert keys.fetches == 2
    assert "keeping the 1 keys fetched before" in caplog.text
    mono.now += RETRY_AFTER - 1
    v.verify_basic("ci", issuer.token())
    assert keys.fetches == 2  # not asked again within the pause, however many tokens arrive
    mono.now += 1
    v.verify_basic("ci", issuer.token())
    assert keys.fetches == 3
