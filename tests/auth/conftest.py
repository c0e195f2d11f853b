"""Fixtures for the identity and access-policy tests.

- ``module_server(extra_toml, policy=..., workers=1)`` (module scoped): starts a
  real ``angos server`` whose config is the shared base plus ``extra_toml``
  (``[global.access_policy] default = policy`` unless ``extra_toml`` declares its
  own global policy); every server stops when the module ends, so tests in one
  module share it.
- ``argon_hash(password)``: a hash made by the real ``angos argon`` command
  (session-cached per password, since argon2 is slow on purpose).
- ``Client``: a tiny OCI client over ``requests`` with optional basic
  credentials, enough to push a blob and a manifest and read them back.
- ``auth_attempts(get)`` / ``attempts_delta``: ``auth_attempts_total`` by (method, result),
  so a test asserts the attempts it caused on a server other tests also use.
- ``make_pki(dir)``: a CA, a server certificate for 127.0.0.1, client
  certificates with chosen organizations and one from an unrelated CA, all
  generated with ``cryptography``.
- ``oidc_pki`` / ``issuer_server(require_client_cert=False)`` (module scoped): local OIDC
  issuers over HTTPS on 127.0.0.1 (tests/auth/oidc_issuer.py), their certificates from
  ``oidc_pki``; every issuer server stops when the module ends.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from ..conftest import ANGOS, AngosServer, angos_config, free_port, stop_all

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"

_HASHES: dict[str, str] = {}


def argon_hash(password: str) -> str:
    if password not in _HASHES:
        res = subprocess.run(ANGOS + ["argon"], input=password + "\n", capture_output=True, text=True, timeout=60)
        assert res.returncode == 0, res.stderr
        _HASHES[password] = res.stdout.strip()
    return _HASHES[password]


def identity_toml(**users: str) -> str:
    """``[auth.identity.<name>]`` tables; each username equals its identity id."""
    out = []
    for name, password in users.items():
        out.append(f'[auth.identity.{name}]\nusername = "{name}"\npassword = "{argon_hash(password)}"\n')
    return "\n".join(out)


def base_config(data_dir: Path, port: int, workers: int) -> str:
    return (f'[server]\nbind_address = "127.0.0.1"\nport = {port}\nworkers = {workers}\n\n'
            f'[blob_store.fs]\nroot_dir = "{data_dir}"\n\n')


@pytest.fixture(scope="module")
def module_server(tmp_path_factory):
    servers: list[AngosServer] = []

    def make(extra: str = "", policy: str = "allow", workers: int = 1, config_text: str | None = None,
             start: bool = True) -> AngosServer:
        workdir = tmp_path_factory.mktemp("angos-auth")
        port = free_port()
        if config_text is not None:
            text = config_text
        elif "[global.access_policy]" in extra:  # the test brings its own global policy
            text = base_config(workdir / "data", port, workers) + extra
        else:
            text = angos_config(workdir / "data", port, workers, extra, policy)
        server = AngosServer(workdir, text.replace("@PORT@", str(port)).replace("@DATA@", str(workdir / "data")),
                             port)
        servers.append(server)
        if start:
            server.start()
        return server

    yield make
    stop_all(servers)


@pytest.fixture(scope="module")
def oidc_pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("oidc-pki"))


@pytest.fixture(scope="module")
def issuer_server(oidc_pki):
    from .oidc_issuer import IssuerServer

    servers: list = []

    def make(require_client_cert: bool = False):
        server = IssuerServer(oidc_pki, require_client_cert)
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def uniq(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


class Client:
    """Raw OCI calls as one caller; methods return the ``requests.Response``."""

    def __init__(self, base_url: str, user: str | None = None, password: str | None = None, **kwargs):
        self.base = base_url
        self.s = requests.Session()
        if user is not None:
            self.s.auth = (user, password)
        # verify=/cert= go on every call: a session attribute would lose to REQUESTS_CA_BUNDLE.
        self.kw = kwargs

    def url(self, path: str) -> str:
        return f"{self.base}/v2/{path}"

    def get(self, path: str, **kw):
        return self.s.get(self.url(path), timeout=30, **self.kw, **kw)

    def head(self, path: str, **kw):
        return self.s.head(self.url(path), timeout=30, **self.kw, **kw)

    def post(self, path: str, **kw):
        return self.s.post(self.url(path), timeout=30, **self.kw, **kw)

    def put(self, path: str, **kw):
        return self.s.put(self.url(path), timeout=30, **self.kw, **kw)

    def patch(self, path: str, **kw):
        return self.s.patch(self.url(path), timeout=30, **self.kw, **kw)

    def delete(self, path: str, **kw):
        return self.s.delete(self.url(path), timeout=30, **self.kw, **kw)

    def push_blob(self, ns: str, data: bytes) -> str:
        d = digest_of(data)
        r = self.post(f"{ns}/blobs/uploads/", params={"digest": d}, data=data,
                      headers={"Content-Type": "application/octet-stream"})
        assert r.status_code == 201, (r.status_code, r.text)
        return d

    def push_image(self, ns: str, tag: str, seed: bytes | None = None) -> tuple[str, bytes]:
        """Push a config + one layer + manifest under ``tag``; returns (manifest digest, body)."""
        seed = seed or os.urandom(16)
        config = json.dumps({"architecture": "amd64", "os": "linux", "seed": seed.hex(),
                             "rootfs": {"type": "layers", "diff_ids": []}}).encode()
        layer = b"layer-" + seed
        cd, ld = self.push_blob(ns, config), self.push_blob(ns, layer)
        body = manifest_body(cd, len(config), ld, len(layer))
        r = self.put(f"{ns}/manifests/{tag}", data=body, headers={"Content-Type": OCI_MANIFEST})
        assert r.status_code == 201, (r.status_code, r.text)
        return digest_of(body), body


def manifest_body(config_digest: str, config_size: int, layer_digest: str, layer_size: int) -> bytes:
    return json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": config_size},
        "layers": [{"mediaType": OCI_LAYER, "digest": layer_digest, "size": layer_size}],
    }).encode()


def oci_layout(root: Path, tag: str) -> str:
    """A one-image OCI layout for skopeo's ``oci:`` transport; returns the manifest digest."""
    blobs = root / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)
    (root / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))

    def add(data: bytes) -> str:
        d = digest_of(data)
        (blobs / d.split(":")[1]).write_bytes(data)
        return d

    import gzip
    import io
    import tarfile

    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        payload = os.urandom(64)
        info = tarfile.TarInfo("hello.txt")
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
    layer = gzip.compress(raw.getvalue(), mtime=0)
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "rootfs": {"type": "layers", "diff_ids": [digest_of(raw.getvalue())]}}).encode()
    body = manifest_body(add(config), len(config), add(layer), len(layer))
    md = add(body)
    (root / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [
        {"mediaType": OCI_MANIFEST, "digest": md, "size": len(body),
         "annotations": {"org.opencontainers.image.ref.name": tag}}]}))
    return md


def auth_attempts(get) -> dict[tuple[str, str], float]:
    """``auth_attempts_total`` by (method, result), read with ``get(url_path)``. Tests read from
    127.0.0.1, a ``server.metrics_allow`` network by default: the read authenticates nothing, so
    it is no attempt, whatever credentials it carries."""
    out = {}
    for line in get("/metrics").text.splitlines():
        if line.startswith("auth_attempts_total{"):
            labels, value = line.rsplit(" ", 1)
            parts = dict(p.split("=", 1) for p in labels[labels.index("{") + 1:-1].split(","))
            out[(parts["method"].strip('"'), parts["result"].strip('"'))] = float(value)
    return out


def attempts_delta(before: dict, after: dict) -> dict[tuple[str, str], float]:
    """What changed between two :func:`auth_attempts` readings (unchanged labels left out)."""
    return {k: after.get(k, 0.0) - before.get(k, 0.0) for k in set(before) | set(after)
            if after.get(k, 0.0) != before.get(k, 0.0)}


# ---------------------------------------------------------------- certificates


@dataclass
class Pki:
    dir: Path
    ca: Path
    server_cert: Path
    server_key: Path
    _ca: tuple  # (certificate, private key) that signs everything but rogue clients

    def client(self, name: str, organization: str, rogue: bool = False) -> tuple[str, str]:
        """A client certificate + key (paths) with CN=name and O=organization."""
        return _client_cert(self, name, organization, rogue)


def _key():
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1())


def _name(cn: str, org: str | None = None):
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    if org:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    return x509.Name(attrs)


def _cert(subject, issuer, public_key, signing_key, *, ca=False, san_ip=None, client=False):
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import ExtendedKeyUsageOID

    now = datetime.datetime.now(datetime.timezone.utc)
    b = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(public_key)
         .serial_number(x509.random_serial_number())
         .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=2))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ca:
        b = b.add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                          content_commitment=False, key_encipherment=False,
                                          data_encipherment=False, key_agreement=False,
                                          encipher_only=False, decipher_only=False), critical=True)
        b = b.add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    if san_ip:
        b = b.add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(san_ip))]),
                            critical=False)
        b = b.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    if client:
        b = b.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    return b.sign(signing_key, hashes.SHA256())


def _write(path: Path, cert=None, key=None) -> None:
    from cryptography.hazmat.primitives import serialization

    data = b""
    if cert is not None:
        data += cert.public_bytes(serialization.Encoding.PEM)
    if key is not None:
        data += key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption())
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)  # atomic, like a careful certificate rotation


def make_pki(root: Path) -> Pki:
    root.mkdir(parents=True, exist_ok=True)
    ca_key = _key()
    ca_cert = _cert(_name("Angos Test CA"), _name("Angos Test CA"), ca_key.public_key(), ca_key, ca=True)
    _write(root / "ca.pem", ca_cert)
    pki = Pki(root, root / "ca.pem", root / "server.pem", root / "server-key.pem", (ca_cert, ca_key))
    issue_server_cert(pki, "first")
    return pki


def issue_server_cert(pki: Pki, cn: str) -> None:
    """(Re)write the server certificate and key (a new key each time) with ``cn``."""
    ca_cert, ca_key = pki._ca
    key = _key()
    cert = _cert(_name(cn), ca_cert.subject, key.public_key(), ca_key, san_ip="127.0.0.1")
    _write(pki.server_key, key=key)
    _write(pki.server_cert, cert)


def _client_cert(pki: Pki, name: str, organization: str, rogue: bool) -> tuple[str, str]:
    if rogue:
        ca_key = _key()
        ca_cert = _cert(_name("Rogue CA"), _name("Rogue CA"), ca_key.public_key(), ca_key, ca=True)
    else:
        ca_cert, ca_key = pki._ca
    key = _key()
    cert = _cert(_name(name, organization), ca_cert.subject, key.public_key(), ca_key, client=True)
    cert_path, key_path = pki.dir / f"{name}.pem", pki.dir / f"{name}-key.pem"
    _write(cert_path, cert)
    _write(key_path, key=key)
    return str(cert_path), str(key_path)
