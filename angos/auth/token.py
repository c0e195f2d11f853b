"""Registry tokens: short-lived signed statements of who a caller is, never of what they may do.

``TokenService(cfg, store)`` issues and verifies the tokens of the registry
token flow (``GET /token``, :mod:`angos.api.token`). Contract:

- A token is a compact JWT signed with HMAC-SHA256 (``alg`` ``HS256``) by
  the current key of :class:`~angos.auth.token_keys.TokenKeys` (its ``kid``
  in the header). Claims: ``iss`` and ``aud`` (``[auth.token] service``),
  ``iat``, ``exp``, ``jti`` (random), and for an identified caller ``sub``
  (the identity id), ``name`` (its username) and ``ver`` (a fingerprint of
  the identity's password hash); ``cn`` and ``o`` carry a verified client
  certificate's common names and organizations when there was one; ``oidc``
  carries an OIDC caller's identity (``p``: the provider's name, ``c``: the
  token's whole claim map, ``v``: a fingerprint of what the provider accepts),
  so a bearer registry token made from an OIDC login gives the policy the
  same ``identity.oidc`` as the OIDC token itself. There are no grants: the
  CEL policy decides every request made with a token, exactly as it would
  for the same identity's basic credentials.
- :meth:`issue` returns ``(token, expires_in, issued_at)``; ``exp`` is
  ``iat + lifetime_secs``, capped at the key's ``expires_at`` (so the key
  outlives every token it signed) and, for an OIDC caller, at the time its
  OIDC token stops being accepted (a token never outlives its credentials).
- :meth:`verify` returns ``(id, username, common_names, organizations, oidc)``
  (``oidc``: an :class:`~angos.auth.identity.Oidc` or None) or
  raises :class:`InvalidToken` with a ``reason``: ``invalid`` (malformed,
  another algorithm, unknown key, bad signature, another service),
  ``expired``, or ``revoked`` (the identity is gone, its username changed or
  its password hash changed, or the OIDC provider is gone or accepts other
  tokens than it did: a token never outlives the credentials it was issued
  for, after a configuration reload). :meth:`ours` tells whether a
  bearer value looks like one of these tokens (its ``iss`` is our service),
  so other bearer credentials (OIDC) can be told apart later.
- A verified token is remembered until it expires (at most
  :data:`MAX_CACHE` per process; the object is rebuilt on a configuration
  reload), so a client presenting it again costs a dict lookup. Failures are
  not remembered: a forged token costs one HMAC and a JSON parse.

``clock`` (Unix seconds) is a parameter so tests can issue tokens of other times.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import re
import threading
import time
from typing import Callable

from .identity import Identity, Oidc
from .token_keys import TokenKeys

MAX_CACHE = 10_000
MAX_TOKEN_LENGTH = 16384  # an OIDC caller's claims ride along (angos.auth.oidc bounds their token at 8192)
LEEWAY = 60  # seconds a token's iat may lie ahead (clocks of servers sharing keys differ a little)

_SHAPE = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")

Verified = tuple  # (id, username, common_names, organizations, oidc)


class InvalidToken(Exception):
    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def password_fingerprint(password_hash: str) -> str:
    """Changes whenever the identity's hash does (argon2 hashes are salted, so any password change)."""
    return hashlib.sha256(password_hash.encode()).hexdigest()[:16]


class TokenService:
    def __init__(self, cfg, store, clock: Callable[[], float] = time.time):
        settings = cfg.auth.token
        self.service = settings.service
        self.lifetime = settings.lifetime_secs
        self.clock = clock
        self.keys = TokenKeys(store, settings.key_rotation_days, settings.lifetime_secs, clock)
        self._identities = {ident_id: (ident.username, password_fingerprint(ident.password))
                            for ident_id, ident in cfg.auth.identity.items()}
        from .oidc import provider_fingerprint

        self._providers = {name: provider_fingerprint(prov) for name, prov in cfg.auth.oidc.items()}
        self._cache: dict[str, tuple[float, Verified]] = {}
        self._lock = threading.Lock()

    # ------------------------------------------------------------ issuing

    def issue(self, identity: Identity) -> tuple[str, int, int]:
        key = self.keys.signing_key()
        now = int(self.clock())
        exp = int(min(now + self.lifetime, key.expires_at))
        if identity.oidc is not None:
            exp = min(exp, max(now + 1, int(identity.oidc.expires_at)))
        claims: dict = {"iss": self.service, "aud": self.service, "iat": now, "exp": exp,
                        "jti": os.urandom(12).hex()}
        if identity.id is not None:
            username, fingerprint = self._identities[identity.id]
            claims.update(sub=identity.id, name=username, ver=fingerprint)
        if identity.common_names:
            claims["cn"] = list(identity.common_names)
        if identity.organizations:
            claims["o"] = list(identity.organizations)
        if identity.oidc is not None:
            claims["oidc"] = {"p": identity.oidc.provider, "c": identity.oidc.claims,
                              "v": self._providers[identity.oidc.provider]}
        header = {"alg": "HS256", "typ": "JWT", "kid": key.kid}
        signing_input = (_b64(json.dumps(header, separators=(",", ":")).encode()) + "."
                         # UTF-8, not \u escapes: an OIDC caller's non-ASCII claims would otherwise grow six-fold.
                         + _b64(json.dumps(claims, separators=(",", ":"), ensure_ascii=False).encode()))
        sig = hmac.new(key.secret, signing_input.encode("ascii"), hashlib.sha256).digest()
        return signing_input + "." + _b64(sig), exp - now, now

    # ------------------------------------------------------------ verifying

    def ours(self, token: str) -> bool:
        """Whether ``token`` claims to come from this service (unverified: only to pick a verifier)."""
        try:
            return self._claims(token.split(".")[1]).get("iss") == self.service
        except (InvalidToken, IndexError):
            return False

    def verify(self, token: str) -> Verified:
        hit = self._cache.get(token)
        now = self.clock()
        if hit is not None:
            if hit[0] > now:
                return hit[1]
            raise InvalidToken("expired", "token expired")
        claims = self._check(token, now)
        oidc = claims.get("oidc")
        found = (claims.get("sub"), claims.get("name"), tuple(claims.get("cn", ())), tuple(claims.get("o", ())),
                 None if oidc is None else Oidc.of(oidc["p"], oidc["c"], float(claims["exp"])))
        with self._lock:
            if len(self._cache) >= MAX_CACHE:
                self._evict(now)
            self._cache[token] = (float(claims["exp"]), found)
        return found

    def _check(self, token: str, now: float) -> dict:
        if len(token) > MAX_TOKEN_LENGTH or not _SHAPE.fullmatch(token):
            raise InvalidToken("invalid", "malformed token")
        head, body, sig = token.split(".")
        header = self._claims(head)
        if header.get("alg") != "HS256" or not isinstance(header.get("kid"), str):
            raise InvalidToken("invalid", "token is not signed by this registry")
        key = self.keys.verifying_key(header["kid"])
        if key is None:
            raise InvalidToken("invalid", "token is signed by an unknown key")
        try:
            given = _unb64(sig)
        except (binascii.Error, ValueError):
            raise InvalidToken("invalid", "malformed token") from None
        want = hmac.new(key.secret, f"{head}.{body}".encode("ascii"), hashlib.sha256).digest()
        if not hmac.compare_digest(given, want):
            raise InvalidToken("invalid", "bad token signature")
        claims = self._claims(body)
        exp, iat = claims.get("exp"), claims.get("iat")
        if (claims.get("iss") != self.service or claims.get("aud") != self.service
                or not isinstance(exp, int) or not isinstance(iat, int)):
            raise InvalidToken("invalid", "token is not for this service")
        if exp <= now:
            raise InvalidToken("expired", "token expired")
        if iat > now + LEEWAY:
            raise InvalidToken("invalid", "token issued in the future")
        sub = claims.get("sub")
        if sub is not None:
            entry = self._identities.get(sub)
            if entry is None or entry != (claims.get("name"), claims.get("ver")):
                raise InvalidToken("revoked", "the token's identity no longer exists or has new credentials")
        oidc = claims.get("oidc")
        if oidc is not None:
            if not (isinstance(oidc, dict) and isinstance(oidc.get("p"), str) and isinstance(oidc.get("c"), dict)):
                raise InvalidToken("invalid", "malformed token")
            if self._providers.get(oidc["p"]) != oidc.get("v"):
                raise InvalidToken("revoked", "the token's OIDC provider no longer exists or accepts other tokens")
        for name in ("cn", "o"):
            value = claims.get(name, [])
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise InvalidToken("invalid", "malformed token")
        return claims

    @staticmethod
    def _claims(part: str) -> dict:
        try:
            doc = json.loads(_unb64(part))
        except (binascii.Error, ValueError, UnicodeDecodeError):
            raise InvalidToken("invalid", "malformed token") from None
        if not isinstance(doc, dict):
            raise InvalidToken("invalid", "malformed token")
        return doc

    def _evict(self, now: float) -> None:
        for k in [k for k, v in self._cache.items() if v[0] <= now]:
            del self._cache[k]
        if len(self._cache) >= MAX_CACHE:  # all live: drop the oldest half (dicts keep insertion order)
            for k in list(self._cache)[: MAX_CACHE // 2]:
                del self._cache[k]
