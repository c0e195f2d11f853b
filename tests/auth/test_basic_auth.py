"""Basic authentication end to end: hashes from ``angos argon``, real skopeo
clients with credentials and ``skopeo login``, and the 401/403 split.

One server for the module, ``default = "deny"`` globally with a rule that lets
any authenticated identity in, and a repository ``readonly`` where ``bob`` may
only pull.
"""

from __future__ import annotations

import hashlib
import subprocess

import argon2
import pytest
import requests

from ..api.helpers import assert_oci_error
from ..conftest import ANGOS, skopeo
from .conftest import Client, argon_hash, attempts_delta, auth_attempts, identity_toml, oci_layout, uniq

POLICY = """
[global.access_policy]
default = "deny"
rules = ["identity.id != null"]

[repository."readonly".access_policy]
default = "deny"
rules = [
  "identity.id == 'alice'",
  "identity.id == 'bob' && request.action in ['get-manifest', 'get-blob']",
]
"""


@pytest.fixture(scope="module")
def server(module_server):
    return module_server(identity_toml(alice="alice-pw", bob="bob-pw") + POLICY, policy="deny", workers=2)


def test_angos_argon_reads_stdin_and_prints_a_verifying_argon2id_hash():
    res = subprocess.run(ANGOS + ["argon"], input="correct horse\n", capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    hashed = res.stdout.strip()
    assert res.stdout.count("\n") == 1
    assert hashed.startswith("$argon2id$")
    assert argon2.PasswordHasher().verify(hashed, "correct horse")
    with pytest.raises(argon2.exceptions.VerifyMismatchError):
        argon2.PasswordHasher().verify(hashed, "correct horse\n")  # the newline is not the password


def test_angos_argon_refuses_an_empty_password():
    res = subprocess.run(ANGOS + ["argon"], input="\n", capture_output=True, text=True, timeout=60)
    assert res.returncode == 1
    assert res.stdout == ""
    assert len(res.stderr.strip().splitlines()) == 1


def test_skopeo_pushes_and_pulls_with_credentials(server, tmp_path):
    digest = oci_layout(tmp_path / "src", "v1")
    ref = f"docker://{server.host}/{uniq('creds')}/app:v1"
    skopeo("copy", "--dest-tls-verify=false", "--dest-creds", "alice:alice-pw", f"oci:{tmp_path / 'src'}:v1", ref)
    out = skopeo("inspect", "--raw", "--tls-verify=false", "--creds", "bob:bob-pw", ref).stdout
    assert "sha256:" + hashlib.sha256(out.encode()).hexdigest() == digest
    skopeo("copy", "--src-tls-verify=false", "--src-creds", "bob:bob-pw", ref, f"oci:{tmp_path / 'out'}:v1")
    assert (tmp_path / "out" / "blobs" / "sha256" / digest.split(":")[1]).exists()


def test_skopeo_without_credentials_is_refused_by_a_default_deny_policy(server, tmp_path):
    oci_layout(tmp_path / "src", "v1")
    res = skopeo("copy", "--dest-tls-verify=false", f"oci:{tmp_path / 'src'}:v1",
                 f"docker://{server.host}/{uniq('anon')}/app:v1", check=False)
    assert res.returncode != 0
    assert "unauthorized" in res.stderr.lower() or "authentication required" in res.stderr.lower()


def test_skopeo_login_then_push_uses_the_stored_credentials(server, tmp_path):
    authfile = tmp_path / "auth.json"
    res = subprocess.run(["skopeo", "login", "--tls-verify=false", "--authfile", str(authfile), "-u", "alice",
                          "--password-stdin", server.host], input="alice-pw\n", capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 0, res.stderr
    bad = subprocess.run(["skopeo", "login", "--tls-verify=false", "--authfile", str(tmp_path / "bad.json"),
                          "-u", "alice", "--password-stdin", server.host], input="wrong\n",
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0
    digest = oci_layout(tmp_path / "src", "v1")
    ns = f"{uniq('login')}/app"
    skopeo("copy", "--dest-tls-verify=false", "--authfile", str(authfile), f"oci:{tmp_path / 'src'}:v1",
           f"docker://{server.host}/{ns}:v1")
    r = Client(server.url, "alice", "alice-pw").head(f"{ns}/manifests/v1")
    assert r.status_code == 200
    assert r.headers["Docker-Content-Digest"] == digest


def test_anonymous_push_gets_401_with_a_bearer_challenge_naming_the_token_endpoint(server):
    ns = f"{uniq('anon')}/app"
    r = requests.post(f"{server.url}/v2/{ns}/blobs/uploads/", timeout=30)
    assert_oci_error(r, 401, "UNAUTHORIZED")
    assert r.headers["WWW-Authenticate"] == (f'Bearer realm="{server.url}/token",service="angos",'
                                             f'scope="repository:{ns}:pull,push"')
    for auth in (None, ("alice", "wrong"), ("mallory", "alice-pw")):  # none, a wrong password, an unknown user
        v2 = requests.get(f"{server.url}/v2/", auth=auth, timeout=30)
        assert_oci_error(v2, 401, "UNAUTHORIZED")
        assert v2.headers["WWW-Authenticate"] == f'Bearer realm="{server.url}/token",service="angos"'


def test_authenticated_but_denied_push_gets_403_denied(server):
    bob = Client(server.url, "bob", "bob-pw")
    r = bob.post("readonly/app/blobs/uploads/")
    assert_oci_error(r, 403, "DENIED")
    assert "WWW-Authenticate" not in r.headers
    # and the pull side of the same repository is open to bob
    alice = Client(server.url, "alice", "alice-pw")
    digest, _ = alice.push_image("readonly/app", "v1")
    assert bob.get("readonly/app/manifests/v1").headers["Docker-Content-Digest"] == digest


@pytest.fixture(scope="module")
def open_server(module_server):
    """An allow-all server with one identity: wrong credentials must still fail."""
    return module_server(identity_toml(alice="alice-pw"), policy="allow")


@pytest.mark.parametrize("header", [
    None,  # replaced below by wrong basic credentials
    "Basic bm90LWJhc2U2NA==!!",  # not base64
    "Basic " + "YWxpY2U=",  # "alice" without a colon
    "Bearer some.jwt.token",  # a scheme this registry cannot verify
])
def test_wrong_or_unverifiable_credentials_get_401_even_where_anonymous_would_be_allowed(open_server, header):
    srv = open_server
    h = {"Authorization": header} if header else {}
    auth = ("alice", "not-her-password") if header is None else None
    assert requests.get(f"{srv.url}/v2/", timeout=30).status_code == 200  # anonymous is fine here
    r = requests.get(f"{srv.url}/v2/", headers=h, auth=auth, timeout=30)
    assert r.status_code == 401
    assert r.headers["WWW-Authenticate"].startswith('Bearer realm="')
    assert requests.get(f"{srv.url}/v2/", auth=("nobody", "x"), timeout=30).status_code == 401


def test_auth_attempts_are_counted_by_method_and_result(server):
    # The module's server has counted every earlier test's logins: compare two readings.
    alice = Client(server.url, "alice", "alice-pw")
    read = lambda path: alice.s.get(server.url + path, timeout=30)  # noqa: E731 - loopback: never authenticated
    before = auth_attempts(read)
    assert alice.get("").status_code == 200
    for _ in range(2):
        assert requests.get(f"{server.url}/v2/", auth=("alice", "nope"), timeout=30).status_code == 401
    assert requests.get(f"{server.url}/v2/", auth=("nobody", "x"), timeout=30).status_code == 401
    assert requests.get(f"{server.url}/v2/", timeout=30).status_code == 401  # anonymous: no attempt at all
    after = auth_attempts(read)
    # alice's GET succeeded; two wrong passwords and an unknown user failed.
    assert attempts_delta(before, after) == {("basic", "success"): 1.0, ("basic", "failure"): 3.0}


def test_identity_hash_made_by_angos_argon_is_accepted_in_a_config(tmp_path):
    """The printed hash loads and verifies in-process too (no server needed)."""
    from angos.auth import AccessControl
    from angos.config import load_config_text

    cfg = load_config_text(f"""
[server]
bind_address = "127.0.0.1"
[blob_store.fs]
root_dir = "{tmp_path}"
[auth.identity.ci]
username = "ci-bot"
password = "{argon_hash('ci-secret')}"
""")
    ac = AccessControl(cfg)
    import base64

    ident = ac.authenticate("Basic " + base64.b64encode(b"ci-bot:ci-secret").decode(), "127.0.0.1")
    assert (ident.id, ident.username) == ("ci", "ci-bot")
