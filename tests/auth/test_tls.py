"""TLS, mTLS and certificate reload on a real gunicorn server.

Certificates are generated per module with ``cryptography``: a test CA, a
server certificate for 127.0.0.1, client certificates with chosen
organizations, and one client certificate from an unrelated CA.
"""

from __future__ import annotations

import os
import socket
import ssl
import time

import pytest
import requests

from ..conftest import wait_for
from .conftest import Client, attempts_delta, auth_attempts, identity_toml, issue_server_cert, make_pki


def tls_toml(pki, client_auth: str | None) -> str:
    out = (f'[server.tls]\nserver_certificate_bundle = "{pki.server_cert}"\n'
           f'server_private_key = "{pki.server_key}"\n')
    if client_auth:
        out += f'client_ca_bundle = "{pki.ca}"\nclient_auth = "{client_auth}"\n'
    return out + "\n"


def start_tls(module_server, extra: str, pki, cert=None, config_text: str | None = None):
    srv = module_server(extra, start=False, config_text=config_text)
    srv.url = f"https://127.0.0.1:{srv.port}"
    srv.start(wait=False)

    def up():
        if srv.proc.poll() is not None:
            raise RuntimeError(f"server exited: {srv.logs()}")
        try:
            return requests.get(srv.url + "/healthz", verify=str(pki.ca), cert=cert, timeout=2).status_code
        except requests.RequestException as exc:
            return repr(exc) and None

    wait_for(up, timeout=30, what="the TLS server")
    return srv


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


ORG_POLICY = """
[global.access_policy]
default = "deny"
rules = ["'Platform' in identity.certificate.organizations", "identity.id == 'alice'"]
"""


@pytest.fixture(scope="module")
def required(module_server, pki):
    platform = pki.client("builder", "Platform")
    srv = start_tls(module_server, tls_toml(pki, "required") + ORG_POLICY, pki, cert=platform)
    return srv, platform


def test_client_auth_required_rejects_a_client_without_a_certificate(required, pki):
    srv, platform = required
    assert requests.get(srv.url + "/v2/", verify=str(pki.ca), cert=platform, timeout=10).status_code == 200
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(srv.url + "/v2/", verify=str(pki.ca), timeout=10)


def test_client_auth_required_rejects_a_certificate_from_another_ca(required, pki):
    srv, _ = required
    rogue = pki.client("intruder", "Platform", rogue=True)
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(srv.url + "/v2/", verify=str(pki.ca), cert=rogue, timeout=10)


def test_a_rule_on_certificate_organizations_decides(required, pki):
    srv, platform = required
    other = pki.client("stranger", "Other Org")
    assert requests.get(srv.url + "/v2/", verify=str(pki.ca), cert=platform, timeout=10).status_code == 200
    r = requests.get(srv.url + "/v2/", verify=str(pki.ca), cert=other, timeout=10)
    assert r.status_code == 403  # identified by its certificate, so denied rather than challenged
    assert r.json()["errors"][0]["code"] == "DENIED"


def test_client_certificates_are_counted_as_mtls_attempts(required, pki):
    srv, platform = required
    other = pki.client("counted", "Other Org")
    read = lambda path: requests.get(srv.url + path, verify=str(pki.ca), cert=platform, timeout=10)  # noqa: E731
    before = auth_attempts(read)  # a scrape from loopback: not authenticated, so not counted
    for _ in range(3):
        assert requests.get(srv.url + "/v2/", verify=str(pki.ca), cert=platform, timeout=10).status_code == 200
    # identified by its certificate (then denied by the policy): still an mtls identification
    assert requests.get(srv.url + "/v2/", verify=str(pki.ca), cert=other, timeout=10).status_code == 403
    with pytest.raises(requests.exceptions.ConnectionError):  # refused in the handshake: never identified
        requests.get(srv.url + "/v2/", verify=str(pki.ca), timeout=10)
    after = auth_attempts(read)
    assert attempts_delta(before, after) == {("mtls", "success"): 4.0}


def test_client_auth_optional_accepts_either_a_certificate_or_basic_credentials(module_server, pki):
    srv = start_tls(module_server, tls_toml(pki, "optional") + identity_toml(alice="alice-pw") + ORG_POLICY, pki)
    ca = str(pki.ca)
    r = requests.get(srv.url + "/v2/", verify=ca, timeout=10)
    assert r.status_code == 401 and r.headers["WWW-Authenticate"] == (
        f'Bearer realm="{srv.url}/token",service="angos"')  # the realm keeps the https scheme
    assert requests.get(srv.url + "/v2/", verify=ca, auth=("alice", "alice-pw"), timeout=10).status_code == 200
    platform = pki.client("builder2", "Platform")
    assert requests.get(srv.url + "/v2/", verify=ca, cert=platform, timeout=10).status_code == 200
    assert requests.get(srv.url + "/v2/", verify=ca, cert=pki.client("x", "Other"), timeout=10).status_code == 403
    # blobs stream over TLS both ways (the zero-copy sendfile path must step aside for TLS)
    alice = Client(srv.url, "alice", "alice-pw", verify=ca)
    data = os.urandom(3 * 1024 * 1024 + 17)
    digest = alice.push_blob("tls/app", data)
    r = alice.get(f"tls/app/blobs/{digest}")
    assert r.status_code == 200 and r.content == data
    # optional does not mean unchecked: a certificate from another CA still fails the handshake
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(srv.url + "/v2/", verify=ca, cert=pki.client("rogue2", "Platform", rogue=True), timeout=10)


def served_common_name(port: int, ca) -> str:
    ctx = ssl.create_default_context(cafile=str(ca))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            subject = dict(rdn[0] for rdn in tls.getpeercert()["subject"])
    return subject["commonName"]


def test_replaced_certificate_files_are_served_without_a_restart(module_server, tmp_path_factory):
    pki = make_pki(tmp_path_factory.mktemp("pki-reload"))
    srv = start_tls(module_server, tls_toml(pki, None) + '[global.access_policy]\ndefault = "allow"\n', pki)
    pid, workers = srv.pid, srv.worker_pids()
    assert served_common_name(srv.port, pki.ca) == "first"
    issue_server_cert(pki, "second")  # new key and certificate, each replaced atomically
    wait_for(lambda: served_common_name(srv.port, pki.ca) == "second", timeout=20, what="the new certificate")
    assert requests.get(srv.url + "/v2/", verify=str(pki.ca), timeout=10).status_code == 200
    assert (srv.pid, srv.worker_pids()) == (pid, workers), "reload must not restart anything"
    assert "TLS certificate, key or client CA bundle changed; reloaded" in srv.logs()


def test_a_replaced_client_ca_bundle_applies_to_new_connections(module_server, tmp_path_factory):
    pki = make_pki(tmp_path_factory.mktemp("pki-ca-a"))
    other = make_pki(tmp_path_factory.mktemp("pki-ca-b"))
    bundle = pki.dir / "clients-ca.pem"
    bundle.write_bytes(pki.ca.read_bytes())
    extra = (f'[server.tls]\nserver_certificate_bundle = "{pki.server_cert}"\n'
             f'server_private_key = "{pki.server_key}"\nclient_ca_bundle = "{bundle}"\nclient_auth = "required"\n\n'
             + ORG_POLICY)
    old_client, new_client = pki.client("old", "Platform"), other.client("new", "Platform")
    srv = start_tls(module_server, extra, pki, cert=old_client)
    ca = str(pki.ca)
    assert requests.get(srv.url + "/v2/", verify=ca, cert=old_client, timeout=10).status_code == 200
    tmp = bundle.with_suffix(".tmp")
    tmp.write_bytes(other.ca.read_bytes())
    os.replace(tmp, bundle)
    def new_ca_used():
        try:
            return requests.get(srv.url + "/v2/", verify=ca, cert=new_client, timeout=10).status_code == 200
        except requests.exceptions.ConnectionError:
            return False

    wait_for(new_ca_used, timeout=20, what="the new client CA")
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(srv.url + "/v2/", verify=ca, cert=old_client, timeout=10)


def test_a_client_that_never_completes_the_handshake_is_closed_after_the_header_timeout(module_server, pki):
    """The handshake counts against server.header_timeout_secs: a TLS slowloris cannot hold a slot."""
    text = ('[server]\nbind_address = "127.0.0.1"\nport = @PORT@\nworkers = 1\nheader_timeout_secs = 2\n\n'
            '[blob_store.fs]\nroot_dir = "@DATA@"\n\n[global.access_policy]\ndefault = "allow"\n\n'
            + tls_toml(pki, None))
    srv = start_tls(module_server, "", pki, config_text=text)
    silent = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
    half = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
    try:
        half.sendall(b"\x16\x03\x01\x00\xff")  # the start of a ClientHello, never finished
        started = time.monotonic()
        for sock in (silent, half):
            sock.settimeout(max(8 - (time.monotonic() - started), 0.1))
            try:
                assert sock.recv(1024) == b""
            except ConnectionResetError:
                pass
        assert 1.5 <= time.monotonic() - started < 8
        # A complete client is served as before.
        assert requests.get(srv.url + "/v2/", verify=str(pki.ca), timeout=10).status_code == 200
    finally:
        silent.close()
        half.close()


def _pem_pair(pki, cn: str) -> tuple[bytes, bytes]:
    """A new server certificate (for 127.0.0.1, ``cn``) and its key as PEM, not written anywhere."""
    from cryptography.hazmat.primitives import serialization

    from .conftest import _cert, _key, _name

    ca_cert, ca_key = pki._ca
    key = _key()
    cert = _cert(_name(cn), ca_cert.subject, key.public_key(), ca_key, san_ip="127.0.0.1")
    return (cert.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()))


def test_a_half_written_certificate_and_key_pair_keeps_the_previous_one_serving(module_server, tmp_path_factory):
    pki = make_pki(tmp_path_factory.mktemp("pki-half"))
    srv = start_tls(module_server, tls_toml(pki, None) + '[global.access_policy]\ndefault = "allow"\n', pki)
    assert served_common_name(srv.port, pki.ca) == "first"
    cert, key = _pem_pair(pki, "second")
    refused = "TLS files changed but do not load"
    # The key is replaced first; the certificate is still the old one: the pair does not match.
    pki.server_key.write_bytes(key)
    assert served_common_name(srv.port, pki.ca) == "first"
    wait_for(lambda: refused in srv.logs(), what="the mismatched pair to be refused")
    # Then the certificate is being written: half of it is on disk.
    with open(pki.server_cert, "wb") as fh:
        fh.write(cert[: len(cert) // 2])
    for _ in range(3):
        assert served_common_name(srv.port, pki.ca) == "first"
        assert requests.get(srv.url + "/v2/", verify=str(pki.ca), timeout=10).status_code == 200
    wait_for(lambda: srv.logs().count(refused) >= 2, what="the half-written certificate to be refused")
    # The pair is complete: the next connection gets it.
    pki.server_cert.write_bytes(cert)
    assert wait_for(lambda: served_common_name(srv.port, pki.ca) == "second", what="the completed pair")


def test_turning_tls_on_is_logged_and_waits_for_a_restart(module_server, pki):
    srv = module_server('[global.access_policy]\ndefault = "allow"\n')
    plain = srv.config_path.read_text()
    srv.config_path.write_text(plain + "\n" + tls_toml(pki, None))
    wait_for(lambda: "take effect only after a restart: server.tls (enabling or disabling TLS)" in srv.logs(),
             timeout=30, what="the restart-only change to be logged")
    assert requests.get(srv.url + "/v2/", timeout=10).status_code == 200  # still plain HTTP
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(f"https://127.0.0.1:{srv.port}/v2/", verify=str(pki.ca), timeout=10)
    srv.stop()
    srv.url = f"https://127.0.0.1:{srv.port}"
    srv.start(wait=False)
    wait_for(lambda: _answers(srv.url + "/healthz", str(pki.ca)), timeout=30, what="the TLS server after the restart")
    assert requests.get(srv.url + "/v2/", verify=str(pki.ca), timeout=10).status_code == 200
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(f"http://127.0.0.1:{srv.port}/v2/", timeout=10)


def _answers(url: str, ca: str) -> bool:
    try:
        return requests.get(url, verify=ca, timeout=2).status_code == 200
    except requests.RequestException:
        return False
