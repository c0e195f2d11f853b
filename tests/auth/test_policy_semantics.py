"""Policy semantics in-process (no server): the SPEC 6 truth table, both
policies must allow, null identity fields, absent request fields and the
credentials cache. These pin the decision logic that the HTTP tests exercise
end to end, with many more combinations than servers would allow cheaply."""

from __future__ import annotations

import base64
import json
import logging

import pytest

from angos.auth import AccessControl, Identity
from angos.config import ConfigError, load_config_text

from .conftest import argon_hash

ALICE = Identity(id="alice", username="alice", client_ip="10.0.0.1")
ANON = Identity(client_ip="10.0.0.2")
CERT = Identity(client_ip="10.0.0.3", common_names=("build-1",), organizations=("Platform",))


def control(tmp_path, extra: str) -> AccessControl:
    return AccessControl(load_config_text(f"""
[server]
bind_address = "127.0.0.1"
[blob_store.fs]
root_dir = "{tmp_path}"
{extra}
"""))


@pytest.mark.parametrize("default, rule_values, allowed", [
    ("allow", [], True),
    ("allow", ["false"], True),
    ("allow", ["false", "true"], False),
    ("deny", [], False),
    ("deny", ["false"], False),
    ("deny", ["false", "true"], True),
    ("deny", ["true", "dyn(1)"], False),  # a non-boolean result (dyn: past the load-time check) denies
    ("allow", ["false", "dyn('no')"], False),
    ("deny", ["true", "request.n == 1"], False),  # a runtime error (absent field) denies even when another rule allows
    ("allow", ["request.n == 1"], False),
])
def test_default_and_rule_truth_table(tmp_path, default, rule_values, allowed):
    rules = ", ".join(f'"{r}"' for r in rule_values)
    ac = control(tmp_path, f'[global.access_policy]\ndefault = "{default}"\nrules = [{rules}]\n')
    assert ac.is_allowed(ALICE, "get-blob", {"action": "get-blob", "namespace": "a/b"}) is allowed


def test_default_is_deny_when_unset(tmp_path):
    ac = control(tmp_path, "[global.access_policy]\n")
    assert not ac.is_allowed(ALICE, "get-api-version", {"action": "get-api-version"})


def test_absent_global_policy_leaves_repository_policy_in_charge(tmp_path):
    # The seed's active-active example declares only a repository policy; it must serve.
    ac = control(tmp_path, '[repository."nginx".access_policy]\ndefault = "allow"\n'
                           '[repository."locked".access_policy]\n')
    assert ac.is_allowed(ALICE, "put-manifest", {"action": "put-manifest", "namespace": "nginx/app"})
    assert not ac.is_allowed(ALICE, "put-manifest", {"action": "put-manifest", "namespace": "locked/app"})
    assert ac.is_allowed(ALICE, "get-api-version", {"action": "get-api-version"})


@pytest.mark.parametrize("global_default, repo_default, allowed", [
    ("allow", "allow", True), ("allow", "deny", False), ("deny", "allow", False), ("deny", "deny", False)])
def test_global_and_repository_policy_must_both_allow(tmp_path, global_default, repo_default, allowed):
    ac = control(tmp_path, f"""
[global.access_policy]
default = "{global_default}"
[repository."team".access_policy]
default = "{repo_default}"
""")
    assert ac.is_allowed(ALICE, "get-blob", {"action": "get-blob", "namespace": "team/app"}) is allowed
    # a namespace in no repository answers to the global policy alone
    assert ac.is_allowed(ALICE, "get-blob", {"action": "get-blob", "namespace": "teams/app"}) is (
        global_default == "allow")
    # "team" itself belongs to the repository too
    assert ac.is_allowed(ALICE, "get-blob", {"action": "get-blob", "namespace": "team"}) is allowed


def test_identity_fields_are_null_when_unset_and_certificate_lists_are_empty(tmp_path):
    ac = control(tmp_path, """
[global.access_policy]
default = "deny"
rules = ["identity.id == null && identity.username == null && identity.client_ip == null && size(identity.certificate.organizations) == 0 && size(identity.certificate.common_names) == 0"]
""")
    assert ac.is_allowed(Identity(), "healthz", {"action": "healthz"})
    assert not ac.is_allowed(ALICE, "healthz", {"action": "healthz"})


def test_certificate_names_are_visible_to_rules(tmp_path):
    ac = control(tmp_path, """
[global.access_policy]
default = "deny"
rules = ["'Platform' in identity.certificate.organizations && identity.certificate.common_names.exists(n, n.startsWith('build-'))"]
""")
    assert ac.is_allowed(CERT, "get-blob", {"action": "get-blob"})
    assert not ac.is_allowed(ALICE, "get-blob", {"action": "get-blob"})
    assert not CERT.anonymous and ANON.anonymous


def test_optional_request_fields_are_absent_not_null(tmp_path):
    ac = control(tmp_path, """
[global.access_policy]
default = "deny"
rules = ["!has(request.from) && !has(request.digest) && has(request.namespace) && request.n == 5"]
""")
    assert ac.is_allowed(ANON, "list-tags", {"action": "list-tags", "namespace": "x", "n": 5})
    assert not ac.is_allowed(ANON, "list-tags", {"action": "list-tags", "namespace": "x", "n": 5, "from": "y"})
    # None values are dropped, so has() is false for them too
    assert ac.is_allowed(ANON, "list-tags", {"action": "list-tags", "namespace": "x", "n": 5, "digest": None})


def test_the_same_identity_gets_fresh_request_fields_every_decision(tmp_path):
    """The per-identity context is reused; a field from one request must not leak into the next."""
    ac = control(tmp_path, """
[global.access_policy]
default = "allow"
rules = ["has(request.from)"]
""")
    assert not ac.is_allowed(ALICE, "mount-blob", {"action": "mount-blob", "namespace": "a", "from": "b"})
    assert ac.is_allowed(ALICE, "get-blob", {"action": "get-blob", "namespace": "a"})


def test_rules_are_compiled_once_at_load_and_errors_name_the_key(tmp_path):
    with pytest.raises(ConfigError) as exc:
        control(tmp_path, """
[global.access_policy]
rules = ["true"]
[repository."team".access_policy]
rules = ["true", "true", "request.action =="]
""")
    msg = str(exc.value)
    assert msg.startswith("repository.team.access_policy.rules[2]: invalid CEL rule")
    assert "request.action ==" in msg and "\n" not in msg


@pytest.mark.parametrize("rule, reason", [
    ("has(request.frm)", "request has no field 'frm'"),
    ("identity.certificate.org == 'x'", "identity.certificate has no field 'org'"),
    ("request.n == '10'", "never equal"),
    ("request.from != null", "test it with has()"),
    ("matches(request.action, '^get-')", "unknown function matches()"),
    ("identity.id.lowerAscii() == 'x'", "no method lowerAscii()"),
    ("request.n + 1u > 2", "'+' cannot be applied to an int and a uint"),
    ("identity.certificate.organizations.exists(o, o)", "not a boolean"),
    ("request.action == 'get-blob' || request.namespace", "'||' needs booleans"),
    ("size(request.action)", "evaluates to int"),
    ("'x' in request.action", "'in' cannot look for a string in a string"),
])
def test_a_rule_that_can_never_work_is_refused_at_load_with_its_key(tmp_path, rule, reason):
    with pytest.raises(ConfigError) as exc:
        control(tmp_path, f'[repository."team".access_policy]\nrules = ["true", {json.dumps(rule)}]\n')
    msg = str(exc.value)
    assert msg.startswith(f"repository.team.access_policy.rules[1]: invalid CEL rule {rule!r}: ")
    assert reason in msg and "\n" not in msg


@pytest.mark.parametrize("rule", [
    "identity.id != null && identity.username == 'alice'",
    "identity.client_ip == null || identity.client_ip.startsWith('10.')",
    "has(request.from) && request.from.startsWith('private/')",
    "request.action in ['get-manifest', 'get-blob'] && !(request.namespace in ['secret'])",
    "'Platform' in identity.certificate.organizations",
    "identity.certificate.common_names.exists(cn, cn.matches('^build-[0-9]+$'))",
    "identity.certificate.organizations.all(o, o != 'Evil') && size(identity.certificate.organizations) > 0",
    "has(request.n) && request.n <= 100 && request.n > 0.5",
    "request.action.startsWith('list-') ? has(request.n) : true",
    "type(identity.id) == string",
    "{'alice': ['get-blob']}[identity.id].exists(a, a == request.action)",
    "dyn(request.n) == '10'",
    "request.digest.size() == 71 && request.digest.endsWith('0')",
])
def test_rules_that_can_work_still_load(tmp_path, rule):
    ac = control(tmp_path, f'[global.access_policy]\nrules = [{json.dumps(rule)}]\n')
    assert len(ac.global_policy.rules) == 1


def test_failing_rule_warning_is_rate_limited_but_every_request_is_denied(tmp_path, caplog):
    ac = control(tmp_path, """
[global.access_policy]
default = "allow"
rules = ["request.n == 1"]
""")
    with caplog.at_level(logging.WARNING, logger="angos.auth.policy"):
        results = [ac.is_allowed(ALICE, "get-blob", {"action": "get-blob"}) for _ in range(50)]
    assert results == [False] * 50
    warnings = [r for r in caplog.records if "global.access_policy.rules[0]" in r.getMessage()]
    assert len(warnings) == 1
    assert "request.n == 1" in warnings[0].getMessage()


def test_the_login_cache_holds_hmacs_never_credentials(tmp_path):
    """What the cache keeps (the counting of verifications is in test_argon2_limits.py, on a real server)."""
    ac = control(tmp_path, f"""
[auth.identity.alice]
username = "alice"
password = "{argon_hash('s3cret')}"
""")
    header = "Basic " + base64.b64encode(b"alice:s3cret").decode()
    assert ac.authenticate(header, "127.0.0.1").id == "alice"
    assert ac.basic._cache and not any(b"s3cret" in k or b"alice" in k for k in ac.basic._cache)


def test_duplicate_usernames_are_rejected(tmp_path):
    h = argon_hash("pw")
    with pytest.raises(ConfigError, match=r"auth\.identity\.b\.username"):
        control(tmp_path, f"""
[auth.identity.a]
username = "same"
password = "{h}"
[auth.identity.b]
username = "same"
password = "{h}"
""")
