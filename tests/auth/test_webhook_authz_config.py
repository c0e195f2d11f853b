"""Authorization webhook configuration and request shape, without servers.

Every bad ``[auth.webhook.<name>]`` value and every dangling ``authorization_webhook`` is refused
when the configuration loads, with one line naming the key; which webhook a namespace gets (the
repository's over the global one, ``""`` for none); the headers a call carries, built from an
identity and request fields (the server tests in test_webhook_authz.py check them on the wire).
"""

from __future__ import annotations

import pytest

from angos.auth import AccessControl, Identity
from angos.auth.identity import Oidc
from angos.auth.webhook_authz import Webhooks
from angos.config import ConfigError, load_config_text

BASE = """
[server]
bind_address = "127.0.0.1"

[blob_store.fs]
root_dir = "/tmp/angos-webhook-config"
"""

HOOK = """
[auth.webhook.check]
url = "https://auth.example.com/authorize"
"""


def load(extra: str):
    return load_config_text(BASE + extra)


BAD = [
    ('[global]\nauthorization_webhook = "nope"\n' + HOOK,
     "global.authorization_webhook: no [auth.webhook.nope] is configured (configured: 'check')"),
    ('[repository."app"]\nauthorization_webhook = "nope"\n',
     'repository.app.authorization_webhook: no [auth.webhook.nope] is configured (configured: none)'),
    ('[auth.webhook.check]\nurl = "ftp://auth.example.com/"\n',
     "auth.webhook.check.url: expected an http:// or https:// URL"),
    ('[auth.webhook.check]\ntimeout_ms = 100\n', "auth.webhook.check.url: required key is missing"),
    (HOOK + 'timeout_ms = 0\n', "auth.webhook.check.timeout_ms: must be between 1 and 60000"),
    (HOOK + 'timeout_ms = "1s"\n', "auth.webhook.check.timeout_ms: expected an integer, got '1s'"),
    (HOOK + 'cache_ttl = -1\n', "auth.webhook.check.cache_ttl: must not be negative"),
    (HOOK + 'cache_ttl = "2d"\n', "auth.webhook.check.cache_ttl: must be at most 1d"),
    (HOOK + 'cache_ttl = "soon"\n', "auth.webhook.check.cache_ttl: expected a duration"),
    (HOOK + 'forward_headers = ["X Tenant"]\n',
     "auth.webhook.check.forward_headers: 'X Tenant' is not a valid header name"),
    (HOOK + 'forward_headers = ["X-Registry-Action"]\n',
     "auth.webhook.check.forward_headers: 'X-Registry-Action' cannot be forwarded"),
    (HOOK + 'forward_headers = ["x-forwarded-for"]\n',
     "auth.webhook.check.forward_headers: 'x-forwarded-for' cannot be forwarded"),
    (HOOK + 'forward_headers = ["Host"]\n', "auth.webhook.check.forward_headers: 'Host' cannot be forwarded"),
    (HOOK + 'forward_headers = ["X-Tenant", "x-tenant"]\n',
     "auth.webhook.check.forward_headers: 'x-tenant' is listed twice"),
    (HOOK + 'forward_headers = [%s]\n' % ", ".join(f'"X-H{i}"' for i in range(33)),
     "auth.webhook.check.forward_headers: at most 32 headers"),
    (HOOK + 'bearer_token = "t"\nforward_headers = ["authorization"]\n',
     "auth.webhook.check.forward_headers: cannot forward the client's Authorization header"),
    (HOOK + 'bearer_token = "t"\nbasic_auth = { username = "u", password = "p" }\n',
     "auth.webhook.check: bearer_token and basic_auth are two ways to authenticate; choose one"),
    (HOOK + 'basic_auth = { username = "u" }\n', "auth.webhook.check.basic_auth.password: required key is missing"),
    (HOOK + 'basic_auth = { username = "a:b", password = "p" }\n',
     "auth.webhook.check.basic_auth.username: must not contain ':'"),
    (HOOK + 'bearer_token = "two words"\n', "auth.webhook.check.bearer_token: must be non-empty printable ASCII without spaces"),
    (HOOK + 'bearer_token = ""\n', "auth.webhook.check.bearer_token: must be non-empty printable ASCII without spaces"),
    (HOOK + 'client_certificate_bundle = "/c.pem"\n',
     "auth.webhook.check: client_certificate_bundle and client_private_key go together"),
    (HOOK + 'client_private_key = "/k.pem"\n',
     "auth.webhook.check: client_certificate_bundle and client_private_key go together"),
    (HOOK + 'cache_tll = 5\n', "auth.webhook.check.cache_tll: unknown key (did you mean 'cache_ttl'?)"),
    ('[auth.webhook."a b"]\nurl = "http://127.0.0.1:1/"\n',
     'auth.webhook."a b": a webhook name is 1-63 letters'),
    ('[global]\nauthorization_webhook = 3\n', "global.authorization_webhook: expected a string, got 3"),
]


@pytest.mark.parametrize("extra, message", BAD, ids=[f"{i:02d}-{m.split(':')[0]}" for i, (_, m) in enumerate(BAD)])
def test_bad_webhook_configuration_is_refused_with_its_key(extra, message):
    with pytest.raises(ConfigError) as exc:
        load(extra)
    assert message in str(exc.value)
    assert "\n" not in str(exc.value)


def test_a_bad_url_is_not_echoed():  # a URL may carry a secret in its path or query
    with pytest.raises(ConfigError) as exc:
        load('[auth.webhook.check]\nurl = "ftp://auth.example.com/?key=s3cret"\n')
    assert "s3cret" not in str(exc.value)


def test_secrets_stay_out_of_the_configuration_repr():
    cfg = load(HOOK + 'bearer_token = "tok-s3cret"\n[auth.webhook.other]\nurl = "http://127.0.0.1:1/"\n'
                      'basic_auth = { username = "svc", password = "pw-s3cret" }\n')
    shown = repr(cfg.auth)
    assert "tok-s3cret" not in shown and "pw-s3cret" not in shown
    assert cfg.auth.webhook["check"].bearer_token == "tok-s3cret"
    assert cfg.auth.webhook["other"].basic_auth.password == "pw-s3cret"
    with pytest.raises(ConfigError) as exc:
        load(HOOK + 'bearer_token = "tok s3cret"\n')
    assert "s3cret" not in str(exc.value)


def test_defaults_and_durations():
    cfg = load(HOOK + '[auth.webhook.fast]\nurl = "http://127.0.0.1:1/x"\ncache_ttl = "2m"\ntimeout_ms = 250\n')
    check, fast = cfg.auth.webhook["check"], cfg.auth.webhook["fast"]
    assert (check.timeout_ms, check.cache_ttl, check.forward_headers) == (1000, 60.0, ())
    assert (fast.timeout_ms, fast.cache_ttl) == (250, 120.0)


def test_the_repository_webhook_overrides_the_global_one_and_empty_turns_it_off():
    cfg = load('[global]\nauthorization_webhook = "check"\n' + HOOK
               + '[auth.webhook.strict]\nurl = "http://127.0.0.1:1/strict"\n'
               + '[repository."team"]\nauthorization_webhook = "strict"\n'
               + '[repository."public"]\nauthorization_webhook = ""\n'
               + '[repository."plain"]\nimmutable_tags = true\n')
    hooks = Webhooks(cfg)
    name = lambda ns: (hooks.for_namespace(ns).name if hooks.for_namespace(ns) else None)  # noqa: E731
    assert name("team/app") == "strict"
    assert name("team") == "strict"
    assert name("public/base") is None
    assert name("plain/x") == "check"  # a repository without the key keeps the global webhook
    assert name("elsewhere/x") == "check"
    assert name(None) == "check"  # actions without a namespace (GET /v2/, the catalog, probes)


def test_only_repositories_naming_a_webhook_get_one():
    cfg = load(HOOK + '[repository."team"]\nauthorization_webhook = "check"\n')
    hooks = Webhooks(cfg)
    assert hooks.active
    assert hooks.for_namespace("team/app").name == "check"
    assert hooks.for_namespace("other") is None and hooks.for_namespace(None) is None
    assert not Webhooks(load(HOOK)).active  # declared but named nowhere: never asked


def test_a_webhook_makes_an_allow_all_registry_challenge_anonymous_callers():
    # GET /v2/ is where docker and skopeo learn to log in: a webhook may refuse anonymous callers.
    open_cfg = load('[global.access_policy]\ndefault = "allow"\n' + HOOK)
    assert not AccessControl(open_cfg).challenges_anonymous
    hooked = load('[global]\nauthorization_webhook = "check"\n[global.access_policy]\ndefault = "allow"\n' + HOOK)
    assert AccessControl(hooked).challenges_anonymous


def test_unreadable_tls_files_fail_the_start_up_check_in_one_line(tmp_path):
    cfg = load(HOOK + f'server_ca_bundle = "{tmp_path}/missing-ca.pem"\n')
    with pytest.raises(ConfigError) as exc:
        AccessControl(cfg).webhooks.check_files()
    assert str(exc.value) == (f"auth.webhook.check.server_ca_bundle: cannot load '{tmp_path}/missing-ca.pem': "
                              f"No such file or directory")
    bad = tmp_path / "client.pem"
    bad.write_text("not a certificate")
    cfg = load(HOOK + f'client_certificate_bundle = "{bad}"\nclient_private_key = "{bad}"\n')
    with pytest.raises(ConfigError) as exc:
        AccessControl(cfg).webhooks.check_files()
    assert str(exc.value).startswith(f"auth.webhook.check.client_certificate_bundle: cannot load '{bad}' with the key")
    assert "\n" not in str(exc.value)


def test_the_call_carries_request_fields_identity_and_only_the_listed_headers():
    cfg = load(HOOK + 'forward_headers = ["X-Tenant"]\nbearer_token = "hook-token"\n')
    hook = Webhooks(cfg).hooks["check"]
    who = Identity(id="ci", username="jos\u00e9%", client_ip="10.1.2.3", common_names=("build, 1",),
                   organizations=("ops",))
    fields = {"action": "put-manifest", "namespace": "team/app", "digest": "sha256:" + "a" * 64,
              "tags": ("v1", "latest"), "n": 10, "cache_fill": False, "artifact_type": "x/y"}
    sent = hook._request_headers(who, fields, (("X-Tenant", "blue"),),
                                 {"method": "PUT", "proto": "http", "host": "reg:5000", "uri": "/v2/a?tag=v1"})
    assert sent == {
        "X-Forwarded-Method": "PUT", "X-Forwarded-Proto": "http", "X-Forwarded-Host": "reg:5000",
        "X-Forwarded-Uri": "/v2/a?tag=v1", "X-Forwarded-For": "10.1.2.3",
        "X-Registry-Action": "put-manifest", "X-Registry-Namespace": "team/app",
        "X-Registry-Digest": "sha256:" + "a" * 64, "X-Registry-Tags": '["v1","latest"]', "X-Registry-N": "10",
        "X-Registry-Cache-Fill": "false", "X-Registry-Artifact-Type": "x/y",
        "X-Registry-Identity-ID": "ci", "X-Registry-Username": "jos%C3%A9%25",
        "X-Registry-Certificate-CN": '["build, 1"]', "X-Registry-Certificate-O": '["ops"]',
        "X-Tenant": "blue", "Authorization": "Bearer hook-token",
    }
    for value in sent.values():
        value.encode("ascii")  # every value is plain ASCII, safe in any HTTP stack

    oidc = Identity(oidc=Oidc.of("github", {"sub": "repo:org/x", "repository": "org/r\u00e9po"}, 0.0))
    sent = hook._request_headers(oidc, {"action": "get-manifest"}, (), None)
    assert sent["X-Registry-OIDC-Provider"] == "github"
    assert sent["X-Registry-OIDC-Claims"] == '{"repository":"org/r\\u00e9po","sub":"repo:org/x"}'
    assert "X-Registry-Identity-ID" not in sent and "X-Forwarded-Method" not in sent
