"""An OIDC issuer's signing keys: discovery, the JWKS document, and when to fetch them again.

``IssuerKeys(name, provider)`` holds one ``[auth.oidc.<name>]`` provider's
public keys for :mod:`angos.auth.oidc`. Contract:

- Nothing is fetched when the object is built (``angos server`` builds the
  access layer to validate the configuration before it forks; the docs test
  builds it for every example). The first :meth:`key` call fetches.
- The JWKS URL is ``jwks_uri`` when configured, else the ``jwks_uri`` of
  ``<issuer>/.well-known/openid-configuration`` (OpenID Connect Discovery;
  looked up again at each refresh, so an issuer may move its keys). Both
  must be ``https://``. Requests use ``server_ca_bundle`` (else the system
  trust store) and ``client_certificate_bundle``/``client_private_key`` when
  set; no redirects are followed; bodies over :data:`MAX_DOCUMENT` bytes are
  refused; connect and read time out (:data:`TIMEOUT`).
- :meth:`key(kid, alg)` returns the public key to check a token with. The
  key set is fetched again once it is ``jwks_refresh_interval`` seconds old.
  A ``kid`` the set lacks triggers one extra fetch (an issuer that rotated
  its keys), at most once per :data:`UNKNOWN_KID_REFRESH` seconds per
  provider, so tokens naming made-up ``kid`` values cannot turn the
  registry into a flood of requests to the issuer. A token without a
  ``kid`` is checked with the only signing key when the set has exactly one.
- Errors are :class:`KeyLookupError` with a ``reason``: ``unknown_key`` (no such
  key, or the key does not fit the token's algorithm) or ``unavailable`` (the
  issuer could not be reached, answered badly, or sent no usable key). A
  failed scheduled refresh keeps the keys already held (logged) and is tried
  again after :data:`RETRY_AFTER` seconds; with no keys held, verifications
  fail fast as ``unavailable`` until then instead of each asking the issuer.
- Fetches are serialised per provider (one lock): concurrent requests
  needing keys wait for the one fetch under way and use its result.

``clock`` (monotonic seconds) and ``session`` are parameters for tests.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Callable

log = logging.getLogger("angos.auth.oidc")

MAX_DOCUMENT = 1024 * 1024
TIMEOUT = (5, 10)  # connect, read (seconds)
UNKNOWN_KID_REFRESH = 30.0
RETRY_AFTER = 10.0


class KeyLookupError(Exception):
    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


class IssuerKeys:
    def __init__(self, name: str, provider, clock: Callable[[], float] = time.monotonic, session=None):
        self.name = name
        self.provider = provider
        self.clock = clock
        self._session = session
        self._keys: dict | None = None  # kid (None for a key without one) -> its JWK (a dict)
        self._prepared: dict = {}  # (kid, alg) -> public key object, made from _keys on first use
        self._fresh_until = 0.0  # when the held set is due for a scheduled refresh
        self._next_try = 0.0  # no fetch before this after a failure
        self._last_unknown_kid = float("-inf")
        self._lock = threading.Lock()
        self.fetches = 0  # JWKS documents fetched (successfully or not), for tests and the bench

    # ------------------------------------------------------------ lookup

    def key(self, kid: str | None, alg: str):
        """The public key (a ``cryptography`` key object) to check a token of ``alg`` naming ``kid``."""
        with self._lock:
            now = self.clock()
            refreshed = False
            if self._keys is None or now >= self._fresh_until:
                refreshed = self._refresh(now)
            entry = self._find(kid)
            if entry is None and kid is not None and not refreshed \
                    and now - self._last_unknown_kid >= UNKNOWN_KID_REFRESH:
                self._last_unknown_kid = now  # whether or not the fetch works: one try per window
                self._refresh(now)
                entry = self._find(kid)
            if entry is None:
                if kid is None:
                    raise KeyLookupError("unknown_key", "the token names no key (kid) and the issuer publishes several")
                raise KeyLookupError("unknown_key", f"the issuer publishes no key {kid[:100]!r}")
            return self._prepare(kid, alg, entry)

    def _find(self, kid: str | None) -> dict | None:
        keys = self._keys or {}
        if kid is not None:
            return keys.get(kid)
        return next(iter(keys.values())) if len(keys) == 1 else None

    def _prepare(self, kid: str | None, alg: str, entry: dict):
        """The key of ``entry`` for ``alg``: an RSA key without an ``alg`` of its own serves RS256, RS384,
        PS256...; a key that names its algorithm serves that one only; a key of another type none."""
        import jwt

        found = self._prepared.get((kid, alg))
        if found is not None:
            return found
        declared = entry.get("alg")
        if declared is not None and declared != alg:
            raise KeyLookupError("unknown_key", f"the issuer's key {kid!r} is for {str(declared)[:20]}, not {alg}")
        try:
            found = jwt.PyJWK(entry, algorithm=alg).key
        except (jwt.PyJWKError, jwt.InvalidKeyError, ValueError, TypeError, KeyError):
            raise KeyLookupError("unknown_key", f"the issuer's key {kid!r} cannot check {alg} signatures") from None
        self._prepared[(kid, alg)] = found
        return found

    # ------------------------------------------------------------ fetching

    def _refresh(self, now: float) -> bool:
        """Fetch the key set; True when it was replaced. Raises ``unavailable`` only with no keys held."""
        if now < self._next_try:
            if self._keys is None:
                raise KeyLookupError("unavailable", f"OIDC provider {self.name!r}: its keys could not be fetched; "
                                               f"retrying in {self._next_try - now:.0f}s")
            return False
        try:
            keys = self._fetch()
        except KeyLookupError as exc:
            self._next_try = now + RETRY_AFTER
            if self._keys is None:
                log.warning("OIDC provider %s: %s", self.name, exc)
                raise
            log.warning("OIDC provider %s: %s; keeping the %d keys fetched before", self.name, exc, len(self._keys))
            return False
        self._keys, self._prepared = keys, {}
        self._fresh_until = now + self.provider.jwks_refresh_interval
        return True

    def _fetch(self) -> dict:
        uri = self.provider.jwks_uri or self._discover()
        self.fetches += 1
        doc = self._get_json(uri, "JWKS")
        entries = doc.get("keys")
        if not isinstance(entries, list):
            raise KeyLookupError("unavailable", f"the JWKS document at {uri} has no \"keys\" array")
        keys: dict = {}
        for entry in entries:
            if not isinstance(entry, dict) or entry.get("use", "sig") != "sig" or entry.get("kty") == "oct":
                continue  # encryption keys and shared secrets never check a signature here
            kid = entry.get("kid")
            keys[kid if isinstance(kid, str) else None] = entry
        if not keys:
            raise KeyLookupError("unavailable", f"the JWKS document at {uri} holds no usable signing key")
        return keys

    def _discover(self) -> str:
        url = self.provider.issuer_url.rstrip("/") + "/.well-known/openid-configuration"
        uri = self._get_json(url, "discovery").get("jwks_uri")
        if not isinstance(uri, str) or not uri.startswith("https://"):
            raise KeyLookupError("unavailable", f"the discovery document at {url} names no https:// jwks_uri")
        return uri

    def _get_json(self, url: str, what: str) -> dict:
        import requests

        from ..remote.unread import send

        prov = self.provider
        # verify= and cert= on the call itself: as session attributes, REQUESTS_CA_BUNDLE would override them.
        tls = {"verify": prov.server_ca_bundle or True}
        if prov.client_certificate_bundle:
            tls["cert"] = (prov.client_certificate_bundle, prov.client_private_key)
        try:
            # Not session.get: that reads a redirect answer's body whole, whatever its size (remote/unread.py).
            with send(self.session(), "GET", url, timeout=TIMEOUT, headers={"Accept": "application/json"},
                      **tls) as resp:
                if resp.status_code != 200:
                    raise KeyLookupError("unavailable", f"{what} {url} answered {resp.status_code}")
                body = resp.raw.read(MAX_DOCUMENT + 1, decode_content=True)
        except requests.RequestException as exc:
            raise KeyLookupError("unavailable", f"{what} {url}: {type(exc).__name__}: {_first_line(exc)}") from None
        except OSError as exc:  # e.g. a CA bundle or client certificate file that cannot be read
            raise KeyLookupError("unavailable", f"{what} {url}: {exc}") from None
        if len(body) > MAX_DOCUMENT:
            raise KeyLookupError("unavailable", f"{what} {url}: document larger than {MAX_DOCUMENT} bytes")
        try:
            doc = json.loads(body)
        except ValueError:
            raise KeyLookupError("unavailable", f"{what} {url}: not JSON") from None
        if not isinstance(doc, dict):
            raise KeyLookupError("unavailable", f"{what} {url}: not a JSON object")
        return doc

    def session(self):
        if self._session is None:  # made on first use: never in the master process, never before a fork
            import requests

            self._session = requests.Session()
        return self._session


def _first_line(exc: Exception) -> str:
    text = str(exc)
    return text.splitlines()[0][:300] if text else ""
