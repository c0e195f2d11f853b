"""A local OIDC issuer for the tests: discovery and JWKS over HTTPS on 127.0.0.1, RSA keys, minted tokens.

- ``IssuerServer(pki, require_client_cert=False)`` serves any number of
  issuers, each under its own path: ``https://127.0.0.1:<port>/<name>`` is
  the issuer URL, ``<issuer>/.well-known/openid-configuration`` its discovery
  document and ``<issuer>/jwks`` its key set. The server certificate comes
  from :func:`tests.auth.conftest.make_pki` (the registry trusts it through
  ``server_ca_bundle``); with ``require_client_cert`` the TLS handshake
  refuses clients without a certificate from that CA.
- ``Issuer`` (from :meth:`IssuerServer.issuer`) holds RSA keys made with
  ``cryptography`` and counts the fetches of its documents
  (``jwks_fetches``, ``discovery_fetches``), so a test can see exactly when
  the registry asked. :meth:`Issuer.token` mints a signed token;
  :meth:`Issuer.rotate` publishes a new key and withdraws the old ones;
  :meth:`Issuer.unpublished_key` makes a key the JWKS never shows.
- Hostile tokens are minted by hand here (:func:`unsigned_token`,
  :func:`hmac_with_public_key`), as an attacker would: PyJWT refuses to.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import ssl
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _rsa_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


class Issuer:
    def __init__(self, base_url: str, name: str):
        self.name = name
        self.url = f"{base_url}/{name}"
        self.keys: dict[str, object] = {}  # kid -> private key
        self.published: list[str] = []
        self.jwks_fetches = 0
        self.discovery_fetches = 0
        self.add_key()

    # ------------------------------------------------------------ keys

    def add_key(self, publish: bool = True) -> str:
        kid = f"{self.name}-{uuid.uuid4().hex[:8]}"
        self.keys[kid] = _rsa_key()
        if publish:
            self.published.append(kid)
        return kid

    def rotate(self) -> str:
        """Publish a new key and withdraw every older one; the new key's kid."""
        kid = self.add_key(publish=False)
        self.published = [kid]
        return kid

    def unpublished_key(self) -> str:
        return self.add_key(publish=False)

    @property
    def kid(self) -> str:
        return self.published[-1]

    def public_pem(self, kid: str | None = None) -> bytes:
        return self.keys[kid or self.kid].public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)

    def jwks(self) -> dict:
        out = []
        for kid in self.published:
            jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.keys[kid].public_key()))
            out.append({**jwk, "kid": kid, "use": "sig", "alg": "RS256"})
        return {"keys": out}

    # ------------------------------------------------------------ tokens

    def claims(self, audience: str | None = "angos-test", lifetime: int = 300, **extra) -> dict:
        now = int(time.time())
        claims = {"iss": self.url, "sub": f"subject-{uuid.uuid4().hex[:6]}", "iat": now, "exp": now + lifetime}
        if audience is not None:
            claims["aud"] = audience
        claims.update(extra)
        return {k: v for k, v in claims.items() if v is not None}

    def token(self, claims: dict | None = None, kid: str | None = None, utf8: bool = False, **extra) -> str:
        """A token signed RS256 with ``kid`` (default: the newest published key). ``utf8``: non-ASCII
        claims as UTF-8, as many issuers write them, instead of PyJWT's ``\\u`` escapes."""
        kid = kid or self.kid
        return jwt.encode(claims if claims is not None else self.claims(**extra), self.keys[kid],
                          algorithm="RS256", headers={"kid": kid}, json_encoder=_Utf8 if utf8 else None)


class _Utf8(json.JSONEncoder):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **{**kwargs, "ensure_ascii": False})


def unsigned_token(claims: dict) -> str:
    """``alg: none``: no signature at all."""
    head = _b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    return f"{head}.{_b64(json.dumps(claims).encode())}."


def hmac_with_public_key(issuer: Issuer, claims: dict) -> str:
    """The classic algorithm confusion: HS256 with the issuer's public key (which anyone has) as secret."""
    head = _b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": issuer.kid}).encode())
    signing_input = f"{head}.{_b64(json.dumps(claims).encode())}"
    sig = hmac.new(issuer.public_pem(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(sig)}"


class _Handler(BaseHTTPRequestHandler):
    server: "_Server"

    def do_GET(self):  # noqa: N802 - the http.server API
        name, _, rest = self.path.lstrip("/").partition("/")
        issuer = self.server.issuers.get(name)
        if issuer is None:
            return self._send(404, {"error": "no such issuer"})
        if rest == ".well-known/openid-configuration":
            issuer.discovery_fetches += 1
            return self._send(200, {"issuer": issuer.url, "jwks_uri": issuer.url + "/jwks",
                                    "id_token_signing_alg_values_supported": ["RS256"]})
        if rest == "jwks":
            issuer.jwks_fetches += 1
            return self._send(200, issuer.jwks())
        return self._send(404, {"error": "not found"})

    def _send(self, status: int, doc: dict) -> None:
        body = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):  # quiet
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    issuers: dict[str, Issuer]


class IssuerServer:
    def __init__(self, pki, require_client_cert: bool = False):
        self.httpd = _Server(("127.0.0.1", 0), _Handler)
        self.httpd.issuers = {}
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(pki.server_cert), str(pki.server_key))
        if require_client_cert:
            ctx.verify_mode = ssl.CERT_REQUIRED
            ctx.load_verify_locations(str(pki.ca))
        self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        self.base_url = f"https://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def issuer(self, name: str) -> Issuer:
        issuer = self.httpd.issuers[name] = Issuer(self.base_url, name)
        return issuer

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
