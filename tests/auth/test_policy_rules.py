"""CEL policy semantics over HTTP: fail-closed rules, load-time compile errors,
optional request fields (``has(request.from)``) and ``identity.client_ip``
with and without trusted proxies."""

from __future__ import annotations

import json
import subprocess
import textwrap

import pytest
import requests

from ..conftest import ANGOS, free_port, wait_for
from .conftest import Client, argon_hash, base_config, identity_toml, uniq

# Each repository carries one broken policy; the global policy allows everything.
FAIL_CLOSED = """
[global.access_policy]
default = "allow"

[repository."err-allow".access_policy]
default = "allow"
rules = ["request.from == 'elsewhere'"]

[repository."err-deny".access_policy]
default = "deny"
rules = ["true", "request.last == 'x'"]

[repository."nonbool-allow".access_policy]
default = "allow"
rules = ["dyn(identity.username)"]

[repository."nonbool-deny".access_policy]
default = "deny"
rules = ["request.action == 'get-api-version'", "dyn(size(request.action))"]

[repository."healthy".access_policy]
default = "deny"
rules = ["identity.id == 'alice'"]
"""


@pytest.fixture(scope="module")
def fail_closed(module_server):
    return module_server(identity_toml(alice="alice-pw") + FAIL_CLOSED)


@pytest.mark.parametrize("repo, rule", [
    ("err-allow", "request.from == 'elsewhere'"),
    ("err-deny", "request.last == 'x'"),  # absent: there is no ?last=
    ("nonbool-allow", "dyn(identity.username)"),  # dyn() opts out of the load-time type check
    ("nonbool-deny", "dyn(size(request.action))"),
])
def test_a_rule_that_errors_or_is_not_boolean_denies_in_both_modes_and_logs_the_rule(fail_closed, repo, rule):
    ns = f"{repo}/{uniq('ns')}"
    anon = Client(fail_closed.url)
    alice = Client(fail_closed.url, "alice", "alice-pw")
    assert anon.get(f"{ns}/tags/list").status_code == 401
    r = alice.get(f"{ns}/tags/list")
    assert r.status_code == 403
    assert r.json()["errors"][0]["code"] == "DENIED"
    where = f'repository.{repo}.access_policy.rules[{1 if repo.endswith("-deny") else 0}]'
    wait_for(lambda: where in fail_closed.logs(), timeout=10, what=f"a warning naming {where}")
    lines = [ln for ln in fail_closed.logs().splitlines() if where in ln]
    assert lines, f"no warning naming {where}"
    assert "WARNING" in lines[0] and rule in lines[0] and "fail closed" in lines[0]


def test_the_same_namespace_layout_with_a_healthy_rule_allows(fail_closed):
    """Control: the denials above come from the broken rules, not from the setup."""
    alice = Client(fail_closed.url, "alice", "alice-pw")
    assert alice.get(f"healthy/{uniq('ns')}/tags/list").status_code == 404  # allowed; nothing there yet
    assert Client(fail_closed.url).get(f"healthy/{uniq('ns')}/tags/list").status_code == 401
    assert Client(fail_closed.url).get(f"elsewhere/{uniq('ns')}/tags/list").status_code == 404


def _config(tmp_path, extra: str) -> str:
    path = tmp_path / "config.toml"
    # A real free port: should validation wrongly pass, the server starts harmlessly and the timeout ends it.
    path.write_text(base_config(tmp_path / "data", free_port(), 1) + textwrap.dedent(extra))
    return str(path)


def test_a_rule_with_a_syntax_error_fails_start_up_with_its_text_and_position(tmp_path):
    cfg = _config(tmp_path, """
        [global.access_policy]
        default = "deny"
        rules = ["identity.id == 'a'", "identity.id == 'b' &&", "true"]
        """)
    res = subprocess.run(ANGOS + ["-c", cfg, "server"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 1
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert "global.access_policy.rules[1]" in lines[0]
    assert "identity.id == 'b' &&" in lines[0]
    assert "1:22" in lines[0]  # line:column of the error
    assert "Traceback" not in res.stderr


@pytest.mark.parametrize("rule, reason", [
    ('identity.idd == "alice"', "identity has no field 'idd'"),
    ("request.action == get-manifest", "undeclared name 'get'"),
    ("identity.id", "not a boolean"),
])
def test_a_rule_that_can_never_work_fails_start_up_with_its_key_text_and_reason(tmp_path, rule, reason):
    """It parses, but would deny every request: refused like a syntax error (issue 12 #14)."""
    cfg = _config(tmp_path, f"""
        [global.access_policy]
        default = "deny"
        rules = ["identity.id == 'a'", {json.dumps(rule)}]
        """)
    res = subprocess.run(ANGOS + ["-c", cfg, "server"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 1
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith("angos: global.access_policy.rules[1]: invalid CEL rule ")
    assert rule in lines[0] and reason in lines[0]


def test_a_syntax_error_in_a_repository_rule_names_the_repository_key(tmp_path):
    cfg = _config(tmp_path, """
        [repository."team/app".access_policy]
        rules = ["request.action in ['get-blob'"]
        """)
    res = subprocess.run(ANGOS + ["-c", cfg, "server"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 1
    assert res.stderr.startswith('angos: repository."team/app".access_policy.rules[0]: ')
    assert "request.action in ['get-blob'" in res.stderr


def test_a_malformed_password_hash_fails_start_up_naming_the_identity(tmp_path):
    good = argon_hash("pw")
    cfg = _config(tmp_path, f"""
        [auth.identity.ok]
        username = "ok"
        password = "{good}"

        [auth.identity.broken]
        username = "broken"
        password = "{good[:-10]}"
        """)
    res = subprocess.run(ANGOS + ["-c", cfg, "server"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 1
    assert len(res.stderr.strip().splitlines()) == 1
    assert "auth.identity.broken.password" in res.stderr
    for bad in ("hunter2", good.replace("$argon2id$", "$argon2i$"), good.replace("m=", "m=x"),
                good.rsplit("$", 1)[0] + "$"):
        assert "auth.identity.plain.password" in _fails_with(tmp_path, bad)


def _fails_with(tmp_path, password_hash: str) -> str:
    plain = _config(tmp_path, f"""
        [auth.identity.plain]
        username = "plain"
        password = "{password_hash}"
        """)
    res = subprocess.run(ANGOS + ["-c", plain, "server"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 1, password_hash
    return res.stderr


# ---------------------------------------------------------------- optional request fields

HAS_FROM = """
[global.access_policy]
default = "allow"
rules = ["has(request.from) && request.from.startsWith('private/')"]
"""


@pytest.fixture(scope="module")
def has_from(module_server):
    return module_server(HAS_FROM)


def test_has_request_from_is_true_only_on_a_mount_that_names_its_source(has_from):
    c = Client(has_from.url)
    src = f"private/{uniq('src')}"
    blob = c.push_blob(src, b"private blob " + uniq().encode())
    dst = f"public/{uniq('dst')}"
    # mount naming a private source: the rule sees request.from and denies
    r = c.post(f"{dst}/blobs/uploads/", params={"mount": blob, "from": src})
    assert r.status_code == 401
    # the same query parameter on a request that is not a mount is not request.from
    r = c.post(f"{dst}/blobs/uploads/", params={"from": src})
    assert r.status_code == 202
    assert c.get(f"{src}/blobs/{blob}", params={"from": src}).status_code == 200
    # a from-less mount has no request.from: has() is false and the rule does not fire
    r = c.post(f"{dst}/blobs/uploads/", params={"mount": blob})
    assert r.status_code == 201


# ---------------------------------------------------------------- client address

CLIENT_IP = """
[global.access_policy]
default = "deny"
rules = ["request.action == 'healthz'", "identity.client_ip == '203.0.113.7'"]
"""


@pytest.fixture(scope="module")
def ip_servers(module_server):
    direct = module_server(CLIENT_IP)
    proxied = module_server('[global]\ntrusted_proxies = ["127.0.0.1/32", "10.0.0.0/8"]\n' + CLIENT_IP)
    return direct, proxied


def _status(server, headers):
    # The catalog, not GET /v2/: a credential-less /v2/ is always challenged (angos.api.gate).
    return requests.get(f"{server.url}/v2/_catalog", headers=headers, timeout=30).status_code


@pytest.mark.parametrize("headers, via_proxy", [
    ({}, 401),
    ({"X-Forwarded-For": "203.0.113.7"}, 200),
    ({"X-Real-IP": "203.0.113.7"}, 200),
    ({"X-Forwarded-For": "198.51.100.9, 203.0.113.7"}, 200),  # rightmost untrusted hop is the client
    ({"X-Forwarded-For": "203.0.113.7, 10.1.2.3"}, 200),  # a trusted inner proxy is skipped
    ({"X-Forwarded-For": "203.0.113.7, 198.51.100.9"}, 401),  # a client cannot prepend its own claim
    ({"X-Forwarded-For": "not-an-ip"}, 401),
])
def test_client_ip_honours_forwarding_headers_only_from_a_trusted_proxy(ip_servers, headers, via_proxy):
    direct, proxied = ip_servers
    assert _status(direct, headers) == 401  # untrusted peer: headers ignored, client_ip is 127.0.0.1
    assert _status(proxied, headers) == via_proxy


def test_client_ip_is_the_peer_address_without_a_proxy(module_server):
    srv = module_server("""
[global.access_policy]
default = "deny"
rules = ["identity.client_ip == '127.0.0.1' && identity.id == null && identity.username == null"]
""")
    assert _status(srv, {}) == 200
    assert _status(srv, {"X-Forwarded-For": "203.0.113.7"}) == 200
