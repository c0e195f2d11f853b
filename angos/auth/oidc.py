"""OIDC identities: a JWT from a configured issuer (GitHub Actions, Kubernetes, any OIDC issuer).

``OidcVerifier(providers)`` is built from ``cfg.auth.oidc`` (name →
:class:`~angos.config_auth.OidcProvider`) with the rest of the access layer, and
rebuilt with it on a configuration reload (caches and keys start empty).
Building it touches no network. Contract:

- :meth:`verify_basic(name, token)` checks a token sent as the Basic
  password with the provider's name as username (``docker login -u
  github-actions --password-stdin``); :meth:`verify_bearer(token)` checks an
  ``Authorization: Bearer`` token with the providers whose ``issuer`` equals
  the token's (unverified) ``iss``, in configuration order, the first that
  accepts it winning (a token of no configured issuer raises
  ``OidcError("foreign")``, not counted: it may be anything). Both return an :class:`~angos.auth.identity.Oidc` (provider name and the
  whole claim map) or raise :class:`OidcError` whose ``reason`` is one of
  :data:`RESULTS` (never ``valid``), or ``foreign`` as above.
- A token is accepted when: it is at most :data:`MAX_TOKEN_LENGTH`
  characters; its header's ``alg`` is in the provider's
  ``allowed_algorithms`` (so never ``none`` and never an HMAC algorithm: the
  configuration refuses those); the issuer's key named by ``kid``
  (:mod:`angos.auth.oidc_keys`) verifies its signature (``jwt.decode``,
  PyJWT; no signature is checked by hand); ``iss`` equals the provider's
  issuer exactly; ``exp`` is present and not past and ``nbf``/``iat`` not
  ahead, each within ``clock_skew_tolerance``; ``aud`` contains
  ``required_audience`` when one is set; and every ``required_claims``
  entry matches (see :func:`claims_match`).
- Results (``auth_oidc_verifications_total{provider,result}``): ``valid``;
  ``expired``; ``invalid`` (malformed, another algorithm, bad signature,
  not valid yet); ``wrong_claims`` (issuer, audience or a required claim);
  ``unknown_key`` (no key with that ``kid``, even after a refresh); and
  ``unavailable`` (the issuer's keys could not be fetched: the caller gets
  503, not 401, since its token may be fine).
- A verified token is remembered, keyed by its SHA-256, until it expires
  (``exp`` plus the tolerance, when a fresh check would stop accepting it),
  at most :data:`MAX_CACHE` tokens (least recently used go first), so a
  client presenting it again costs a hash and a dict lookup, like a cached
  basic login. Failures are not remembered. A remembered token stays
  accepted until it expires even if the issuer drops its key meanwhile.

Neither the token nor its signature is ever logged or put in an error
message; failures say what was wrong (``token expired``, ``audience ...``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import time
from collections import OrderedDict
from typing import Callable

from .identity import Oidc
from .oidc_keys import IssuerKeys, KeyLookupError

log = logging.getLogger("angos.auth.oidc")

MAX_TOKEN_LENGTH = 8192  # more than any issuer sends; even as a Basic password it fits a header line (server.py)
MAX_CACHE = 10_000
RESULTS = ("valid", "invalid", "expired", "wrong_claims", "unknown_key", "unavailable")


class OidcError(Exception):
    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


def claims_match(claims: dict, required: dict) -> str | None:
    """None when every ``required_claims`` entry matches, else the first claim name that does not.

    A claim matches when its value equals the configured value or one of the configured values;
    when the token's claim is an array, when any of its elements does (``groups``, ``aud``).
    ``true`` does not match ``1`` (JSON types are compared, not Python's ``True == 1``)."""
    for name, accepted in required.items():
        if name not in claims:
            return name
        value = claims[name]
        values = value if isinstance(value, list) else [value]
        if not any(_same(v, a) for v in values for a in accepted):
            return name
    return None


def _same(a, b) -> bool:
    return a == b and isinstance(a, bool) == isinstance(b, bool)


def provider_fingerprint(provider) -> str:
    """Changes when what a provider accepts does (issuer, audience, required claims, algorithms):
    registry tokens issued for its callers then stop working (angos.auth.token)."""
    what = [provider.issuer_url, provider.required_audience, sorted(provider.required_claims.items()),
            list(provider.allowed_algorithms)]
    return hashlib.sha256(json.dumps(what, default=list).encode()).hexdigest()[:16]


class _Counts:
    """``auth_oidc_verifications_total`` children, bound on first use (see angos.auth.authenticate)."""

    def __init__(self, names):
        self._names = names

    def __getattr__(self, name):
        from .. import metrics

        self.by = {(p, r): metrics.AUTH_OIDC_VERIFICATIONS.labels(p, r) for p in self._names for r in RESULTS}
        return object.__getattribute__(self, name)


class OidcVerifier:
    def __init__(self, providers: dict, clock: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic):
        self.providers = dict(providers)
        self.clock = clock
        self.keys = {name: IssuerKeys(name, prov, monotonic) for name, prov in self.providers.items()}
        self._by_issuer: dict[str, list[str]] = {}
        for name, prov in self.providers.items():
            self._by_issuer.setdefault(prov.issuer_url, []).append(name)
        self._cache: OrderedDict[bytes, tuple[float, Oidc]] = OrderedDict()
        self._count = _Counts(list(self.providers))

    def __bool__(self) -> bool:
        return bool(self.providers)

    # ------------------------------------------------------------ entry points

    def verify_basic(self, name: str, token: str) -> Oidc:
        """``name`` must be a configured provider (the caller checks ``name in self.providers``)."""
        digest = hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()
        hit = self._remembered(digest, name)
        if hit is not None:
            return hit
        return self._verify(name, token, digest)

    def verify_bearer(self, token: str) -> Oidc:
        digest = hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()
        hit = self._remembered(digest, None)
        if hit is not None:
            return hit
        names = self._by_issuer.get(_unverified_issuer(token) or "", ())
        if not names:
            raise OidcError("foreign", "the token's issuer is not a configured OIDC provider")
        first: OidcError | None = None
        for name in names:
            try:
                return self._verify(name, token, digest)
            except OidcError as exc:
                first = first or exc
        raise first

    # ------------------------------------------------------------ checking

    def _remembered(self, digest: bytes, name: str | None) -> Oidc | None:
        hit = self._cache.get(digest)
        if hit is None or (name is not None and hit[1].provider != name):
            return None
        until, found = hit
        if until <= self.clock():
            self._cache.pop(digest, None)
            self._count.by[(found.provider, "expired")].inc()
            raise OidcError("expired", "token expired")
        try:
            self._cache.move_to_end(digest)
        except KeyError:  # evicted meanwhile by another thread
            pass
        self._count.by[(found.provider, "valid")].inc()
        return found

    def _verify(self, name: str, token: str, digest: bytes) -> Oidc:
        try:
            claims = self._check(name, token)
        except OidcError as exc:
            self._count.by[(name, exc.reason)].inc()
            log.debug("OIDC token refused by provider %s: %s", name, exc)
            raise
        prov = self.providers[name]
        until = float(claims["exp"]) + prov.clock_skew_tolerance
        found = Oidc.of(name, claims, until)
        self._cache[digest] = (until, found)
        if len(self._cache) > MAX_CACHE:
            self._evict()
        self._count.by[(name, "valid")].inc()
        log.debug("OIDC token accepted by provider %s (iss %s, sub %s)", name, claims.get("iss"), claims.get("sub"))
        return found

    def _check(self, name: str, token: str) -> dict:
        import jwt

        prov = self.providers[name]
        if len(token) > MAX_TOKEN_LENGTH:
            raise OidcError("invalid", f"token longer than {MAX_TOKEN_LENGTH} characters")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise OidcError("invalid", "malformed token") from None
        alg, kid = header.get("alg"), header.get("kid")
        if not isinstance(alg, str) or alg not in prov.allowed_algorithms:
            shown = alg[:20] if isinstance(alg, str) else alg
            raise OidcError("invalid", f"algorithm {shown!r} is not allowed (allowed_algorithms: "
                                       f"{', '.join(prov.allowed_algorithms)})")
        if kid is not None and not isinstance(kid, str):
            raise OidcError("invalid", "malformed token (kid)")
        if _unverified_issuer(token) != prov.issuer_url:
            # Checked again with the signature below; first, so another issuer's token (its kid
            # unknown here) never makes this provider fetch its keys again.
            raise OidcError("wrong_claims", f"issuer is not {prov.issuer_url}")
        try:
            key = self.keys[name].key(kid, alg)
        except KeyLookupError as exc:
            raise OidcError(exc.reason, str(exc)) from None
        try:
            claims = jwt.decode(token, key=key, algorithms=[alg], issuer=prov.issuer_url,
                                audience=prov.required_audience, leeway=prov.clock_skew_tolerance,
                                options={"require": ["exp", "iss"],
                                         "verify_aud": prov.required_audience is not None})
        except jwt.ExpiredSignatureError:
            raise OidcError("expired", "token expired") from None
        except jwt.ImmatureSignatureError:
            raise OidcError("invalid", "token not valid yet (nbf or iat ahead of this server's clock)") from None
        except jwt.InvalidIssuerError:
            raise OidcError("wrong_claims", f"issuer is not {prov.issuer_url}") from None
        except jwt.InvalidAudienceError:
            raise OidcError("wrong_claims", f"audience does not include {prov.required_audience!r}") from None
        except jwt.MissingRequiredClaimError as exc:
            reason = "wrong_claims" if exc.claim == "aud" else "invalid"  # no audience: not for us
            raise OidcError(reason, f"token has no {exc.claim!r} claim") from None
        except jwt.InvalidSignatureError:
            raise OidcError("invalid", "bad token signature") from None
        except jwt.PyJWTError as exc:
            raise OidcError("invalid", f"invalid token ({type(exc).__name__})") from None
        if not isinstance(claims.get("exp"), (int, float)) or isinstance(claims.get("exp"), bool):
            raise OidcError("invalid", "malformed token (exp)")
        missing = claims_match(claims, prov.required_claims)
        if missing is not None:
            raise OidcError("wrong_claims", f"claim {missing!r} is missing or not an accepted value")
        return claims

    def _evict(self) -> None:
        now = self.clock()
        for k in [k for k, v in self._cache.items() if v[0] <= now]:
            del self._cache[k]
        while len(self._cache) > MAX_CACHE:
            self._cache.popitem(last=False)


def _unverified_issuer(token: str) -> str | None:
    """The ``iss`` of a JWT's payload, unverified (None when it is not a JWT with a string iss)."""
    parts = token.split(".")
    if len(parts) != 3 or len(token) > MAX_TOKEN_LENGTH:
        return None
    try:
        payload = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        return None
    iss = payload.get("iss") if isinstance(payload, dict) else None
    return iss if isinstance(iss, str) else None
