"""OIDC settings, claim matching, policy types and registry tokens made from an OIDC identity, in-process.

No server and no issuer here: ``[auth.oidc.<provider>]`` values are checked when the
configuration loads (one line naming the key), rules reading ``identity.oidc`` are type-checked
when policies compile, and :class:`angos.auth.token.TokenService` carries an OIDC identity into
the registry tokens it issues (and revokes them when the provider changes). Verification against
a real issuer is tests/auth/test_oidc.py.
"""

from __future__ import annotations

import base64
import json

import pytest

from angos.auth import AccessControl
from angos.auth.identity import Identity, Oidc
from angos.auth.oidc import claims_match
from angos.auth.token import InvalidToken, TokenService
from angos.config import ConfigError, load_config_text
from angos.storage import FsStore

T0 = 1_800_000_000


def config(tmp_path, oidc: str = "", extra: str = ""):
    return load_config_text(f"""
[server]
bind_address = "127.0.0.1"
[blob_store.fs]
root_dir = "{tmp_path / 'data'}"
{oidc}
{extra}
""")


CI = '[auth.oidc.ci]\nissuer = "https://issuer.example.com"\n'


@pytest.mark.parametrize("table, message", [
    ('[auth.oidc.ci]\nissuer = "http://issuer.example.com"',
     "auth.oidc.ci.issuer: expected an https:// URL without query or fragment, got 'http://issuer.example.com'"),
    ('[auth.oidc.ci]\nissuer = "https://issuer.example.com?tenant=1"', "auth.oidc.ci.issuer: expected an https://"),
    ('[auth.oidc.ci]\nrequired_audience = "angos"', "auth.oidc.ci.issuer: required (an https:// URL) unless"),
    (CI + 'jwks_uri = "http://issuer.example.com/keys"', "auth.oidc.ci.jwks_uri: expected an https:// URL"),
    (CI + 'allowed_algorithms = ["none"]', "auth.oidc.ci.allowed_algorithms: 'none' would accept unsigned tokens"),
    (CI + 'allowed_algorithms = ["RS256", "HS256"]', "auth.oidc.ci.allowed_algorithms: 'HS256' is an HMAC algorithm"),
    (CI + 'allowed_algorithms = ["hs512"]', "auth.oidc.ci.allowed_algorithms: 'hs512' is an HMAC algorithm"),
    (CI + 'allowed_algorithms = ["RS257"]', "auth.oidc.ci.allowed_algorithms: unknown algorithm 'RS257'; valid: RS256"),
    (CI + "allowed_algorithms = []", "auth.oidc.ci.allowed_algorithms: name at least one algorithm"),
    (CI + 'allowed_algorithms = "RS256"', "auth.oidc.ci.allowed_algorithms: expected an array"),
    (CI + "clock_skew_tolerance = -1", "auth.oidc.ci.clock_skew_tolerance: must be between 0 and 3600"),
    (CI + "clock_skew_tolerance = 7200", "auth.oidc.ci.clock_skew_tolerance: must be between 0 and 3600"),
    (CI + 'clock_skew_tolerance = "60s"', "auth.oidc.ci.clock_skew_tolerance: expected an integer"),
    (CI + "jwks_refresh_interval = 5", "auth.oidc.ci.jwks_refresh_interval: must be between 30 and 604800"),
    (CI + 'provider = "gitlab"', "auth.oidc.ci.provider: must be one of 'generic', 'github', got 'gitlab'"),
    (CI + 'client_certificate_bundle = "/etc/angos/oidc.pem"',
     "auth.oidc.ci: client_certificate_bundle and client_private_key go together"),
    (CI + 'client_private_key = "/etc/angos/oidc-key.pem"',
     "auth.oidc.ci: client_certificate_bundle and client_private_key go together"),
    (CI + "required_claims = [\"repository\"]", "auth.oidc.ci.required_claims: expected a table"),
    (CI + "required_claims = { ref = [] }", "auth.oidc.ci.required_claims: claim 'ref': expected a string"),
    (CI + "required_claims = { ref = 1.5 }", "auth.oidc.ci.required_claims: claim 'ref': expected a string"),
    (CI + "required_claims = { ref = { a = 1 } }", "auth.oidc.ci.required_claims: claim 'ref': expected a string"),
    (CI + "issuer_url = \"https://x\"", "auth.oidc.ci.issuer_url: unknown key (did you mean 'issuer'?)"),
    ('[auth.oidc."ci bot"]\nissuer = "https://issuer.example.com"',
     "auth.oidc.\"ci bot\": a provider name is a login username"),
    (CI.replace("ci]", "alice]") + '[auth.identity.a]\nusername = "alice"\npassword = "x"',
     "auth.oidc.alice: 'alice' is also the username of auth.identity.a"),
])
def test_a_bad_oidc_setting_fails_the_config_with_one_line_naming_its_key(tmp_path, table, message):
    with pytest.raises(ConfigError) as err:
        config(tmp_path, table)
    assert str(err.value).startswith(message) and "\n" not in str(err.value), str(err.value)


def test_defaults_and_the_github_provider_s_issuer(tmp_path):
    cfg = config(tmp_path, CI + '[auth.oidc.github-actions]\nprovider = "github"\n'
                               'required_claims = { repository_owner = "myorg", ref = ["refs/heads/main", '
                               '"refs/tags/v1"], run_attempt = 1, ephemeral = true }\n')
    ci, gh = cfg.auth.oidc["ci"], cfg.auth.oidc["github-actions"]
    assert (ci.provider, ci.issuer_url, ci.jwks_uri, ci.required_audience) == (
        "generic", "https://issuer.example.com", None, None)
    assert (ci.allowed_algorithms, ci.clock_skew_tolerance, ci.jwks_refresh_interval) == (("RS256",), 60, 3600)
    assert gh.issuer_url == "https://token.actions.githubusercontent.com"
    assert gh.required_claims == {"repository_owner": ("myorg",), "ref": ("refs/heads/main", "refs/tags/v1"),
                                  "run_attempt": (1,), "ephemeral": (True,)}


def test_a_configured_issuer_is_not_contacted_when_the_configuration_is_checked(tmp_path):
    # angos server validates before forking, and the docs test builds every example: neither may
    # depend on an issuer answering (this one cannot: nothing listens on port 1).
    ac = AccessControl(config(tmp_path, '[auth.oidc.ci]\nissuer = "https://127.0.0.1:1/ci"\n'))
    assert ac.oidc.keys["ci"].fetches == 0


@pytest.mark.parametrize("claims, required, mismatch", [
    ({"repository_owner": "myorg"}, {"repository_owner": ("myorg",)}, None),
    ({"ref": "refs/heads/dev"}, {"ref": ("refs/heads/main", "refs/heads/dev")}, None),
    ({"ref": "refs/heads/topic"}, {"ref": ("refs/heads/main", "refs/heads/dev")}, "ref"),
    ({}, {"ref": ("refs/heads/main",)}, "ref"),
    ({"groups": ["dev", "registry-admins"]}, {"groups": ("registry-admins",)}, None),  # an array claim: any element
    ({"groups": ["dev"]}, {"groups": ("registry-admins",)}, "groups"),
    ({"email_verified": True}, {"email_verified": (True,)}, None),
    ({"email_verified": 1}, {"email_verified": (True,)}, "email_verified"),  # JSON 1 is not true
    ({"run_attempt": 1}, {"run_attempt": (1,)}, None),
    ({"a": "x", "b": "y"}, {"a": ("x",), "b": ("z",)}, "b"),
])
def test_required_claims_match_a_value_one_of_several_or_an_element_of_an_array_claim(claims, required, mismatch):
    assert claims_match(claims, required) == mismatch


@pytest.mark.parametrize("rule", [
    "identity.oidc != null && identity.oidc.claims['repository'].startsWith('myorg/')",
    "identity.oidc != null && identity.oidc.provider == 'github-actions'",
    "identity.oidc != null && identity.oidc.claims['kubernetes.io']['namespace'] == 'ci'",
    "identity.oidc != null && 'registry-admins' in identity.oidc.claims['groups']",
    "identity.oidc != null && identity.oidc.claims['email_verified'] == true",
    "identity.oidc == null && identity.id != null",
])
def test_policies_may_read_the_oidc_provider_and_any_claim(tmp_path, rule):
    AccessControl(config(tmp_path, CI, f'[global.access_policy]\nrules = ["{rule}"]\n'))


@pytest.mark.parametrize("rule, message", [
    ("identity.oidc.provider_name == 'ci'", "identity.oidc has no field 'provider_name' (fields: claims, provider)"),
    ("identity.oidc.claims", "evaluates to map(string, dyn), not a boolean"),
    ("identity.oidc == 'ci'", "identity.oidc or null is never equal to a string"),
])
def test_a_rule_misreading_identity_oidc_fails_the_config(tmp_path, rule, message):
    with pytest.raises(ConfigError) as err:
        AccessControl(config(tmp_path, CI, f'[global.access_policy]\nrules = ["{rule}"]\n'))
    assert message in str(err.value) and "global.access_policy.rules[0]" in str(err.value)


# ---------------------------------------------------------------- registry tokens for an OIDC caller


class Clock:
    def __init__(self, now: float):
        self.now = now

    def __call__(self) -> float:
        return self.now


def payload(token: str) -> dict:
    part = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


GITHUB_CLAIMS = {"iss": "https://issuer.example.com", "aud": "angos", "sub": "repo:myorg/app:ref:refs/heads/main",
                 "repository": "myorg/app", "ref": "refs/heads/main", "run_attempt": 1, "exp": T0 + 600}


def test_a_registry_token_issued_to_an_oidc_caller_carries_the_same_identity(tmp_path):
    cfg = config(tmp_path, CI)
    svc = TokenService(cfg, FsStore(str(tmp_path / "data")), Clock(T0))
    oidc = Oidc.of("ci", GITHUB_CLAIMS, T0 + 660)
    token, expires_in, _ = svc.issue(Identity(client_ip="10.0.0.1", oidc=oidc))
    assert payload(token)["oidc"]["p"] == "ci" and payload(token)["oidc"]["c"] == GITHUB_CLAIMS
    assert "sub" not in payload(token)  # no [auth.identity] entry: an OIDC sub never poses as one
    assert expires_in == 300
    ident_id, username, cns, orgs, got = svc.verify(token)
    assert (ident_id, username, cns, orgs) == (None, None, (), ())
    assert got == oidc and got.claims == GITHUB_CLAIMS  # equal identities share one policy context
    assert Identity(oidc=got) == Identity(oidc=oidc) and not Identity(oidc=got).anonymous


def test_a_registry_token_never_outlives_the_oidc_token_it_was_issued_for(tmp_path):
    svc = TokenService(config(tmp_path, CI), FsStore(str(tmp_path / "data")), Clock(T0))
    token, expires_in, _ = svc.issue(Identity(oidc=Oidc.of("ci", GITHUB_CLAIMS, T0 + 90)))
    assert expires_in == 90 and payload(token)["exp"] == T0 + 90


@pytest.mark.parametrize("change", [
    "",  # the provider removed
    CI + 'required_audience = "registry"',
    CI + 'required_claims = { repository_owner = "myorg" }',
    CI.replace("issuer.example.com", "other.example.com"),
])
def test_a_registry_token_is_revoked_when_its_oidc_provider_goes_or_accepts_other_tokens(tmp_path, change):
    store, clock = FsStore(str(tmp_path / "data")), Clock(T0)
    token, _, _ = TokenService(config(tmp_path, CI), store, clock).issue(
        Identity(oidc=Oidc.of("ci", GITHUB_CLAIMS, T0 + 600)))
    assert TokenService(config(tmp_path, CI + "jwks_refresh_interval = 600"), store, clock).verify(token)[4]
    with pytest.raises(InvalidToken) as err:
        TokenService(config(tmp_path, change), store, clock).verify(token)  # as after a configuration reload
    assert err.value.reason == "revoked"
