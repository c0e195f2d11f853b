"""Who is asking: a request's credentials become an :class:`Identity`. Every request (the access
gate) and the token endpoint go through :meth:`Authenticator.authenticate`; the CEL policy then
decides with the identity, whatever credential produced it.

Credentials and what they give:

- no ``Authorization`` header, or ``Basic`` with an empty username *and* an
  empty password (``Og==``, what skopeo and podman send when they have no
  login): anonymous. A verified client certificate's names are added in
  every case (``identity.certificate.*``).
- ``Basic user:password``: :class:`~angos.auth.basic.BasicAuth` (argon2,
  remembered, throttled per source). Wrong ones raise
  :class:`~angos.oci.errors.Unauthorized`; a throttled or queued-out check
  raises :class:`~angos.oci.errors.TooManyRequests` with
  ``detail.retry_after``.
- ``Basic <provider>:<jwt>``, the username being the name of an
  ``[auth.oidc.<provider>]`` table: the JWT is checked by
  :class:`~angos.auth.oidc.OidcVerifier` and the identity has ``oidc`` set
  (and no id or username). A refused token raises ``Unauthorized``; an
  issuer whose keys cannot be fetched :class:`~angos.oci.errors.Unavailable`
  (503: the token may be fine).
- ``Bearer <token>``: a token whose (unverified) ``iss`` is this registry's
  service goes to :class:`~angos.auth.token.TokenService`; with OIDC
  providers configured, any other is an OIDC token as above, checked by the
  providers whose issuer is its ``iss`` (a service name cannot be an
  ``https://`` URL, so the two never overlap). A registry token gives the
  identity it was issued for: id, username, OIDC provider and claims (its
  certificate names when this connection has no verified certificate of its
  own). An invalid, expired or revoked token raises ``Unauthorized``.
- anything else (another scheme, a bearer value no verifier knows): ``Unauthorized``,
  never silently anonymous.

:func:`credential_kind` names the kind without verifying (the gate challenges
``GET /v2/`` only for callers that sent nothing).

Counted in ``auth_attempts_total{method,result}`` (``basic``/``mtls``:
``success``, ``failure``, ``throttled``) and
``auth_token_verifications_total{result}`` (``valid``, ``invalid``,
``expired``, ``revoked``); OIDC tokens in
``auth_oidc_verifications_total{provider,result}`` (:mod:`angos.auth.oidc`).
"""

from __future__ import annotations

import base64
import binascii

from ..oci.errors import TooManyRequests, Unauthorized, Unavailable
from .basic import BadCredentials, BasicAuth
from .identity import Identity, Oidc
from .throttle import Busy

EMPTY_BASIC = "Og=="  # base64 of ":"


class _Counters:
    """Metric children, bound on first use.

    ``angos.metrics`` (and so prometheus_client) must not be imported when
    ``angos server`` validates the config in the master process: the client
    picks its multiprocess value store at import time, before the server has
    exported ``PROMETHEUS_MULTIPROC_DIR``.
    """

    def __getattr__(self, name):
        from .. import metrics

        self.basic_ok = metrics.AUTH_ATTEMPTS.labels("basic", "success")
        self.basic_fail = metrics.AUTH_ATTEMPTS.labels("basic", "failure")
        self.basic_busy = metrics.AUTH_ATTEMPTS.labels("basic", "throttled")
        self.mtls_ok = metrics.AUTH_ATTEMPTS.labels("mtls", "success")
        self.token = {r: metrics.AUTH_TOKEN_VERIFICATIONS.labels(r) for r in ("valid", "invalid", "expired", "revoked")}
        return object.__getattribute__(self, name)


def credential_kind(authorization: str | None) -> str:
    """``none`` (nothing, or empty Basic credentials), ``basic``, ``bearer`` or ``other``; unverified."""
    if not authorization or not authorization.strip():
        return "none"
    scheme, _, value = authorization.strip().partition(" ")
    scheme = scheme.lower()
    if scheme == "basic":
        return "none" if value.strip() == EMPTY_BASIC else "basic"
    if scheme == "bearer":
        return "bearer"
    return "other"


def basic_credentials(authorization: str) -> tuple[str, str] | None:
    """``Basic`` credentials' (username, password), unverified; None when they are malformed."""
    try:
        decoded = base64.b64decode(authorization.strip().partition(" ")[2].strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return None
    username, sep, password = decoded.partition(":")
    return (username, password) if sep else None


class Authenticator:
    def __init__(self, basic: BasicAuth, tokens=None, oidc=None):
        """``tokens``: the :class:`~angos.auth.token.TokenService` (None: registry tokens are refused);
        ``oidc``: the :class:`~angos.auth.oidc.OidcVerifier` (None or empty: no OIDC provider)."""
        self.basic = basic
        self.tokens = tokens
        self.oidc = oidc or None
        self._count = _Counters()

    def authenticate(self, authorization: str | None, client_ip: str | None,
                     common_names: tuple[str, ...] = (), organizations: tuple[str, ...] = ()) -> Identity:
        if common_names or organizations:
            self._count.mtls_ok.inc()
        kind = credential_kind(authorization)
        ident_id = username = oidc = None
        if kind == "basic":
            creds = basic_credentials(authorization) if self.oidc is not None else None
            if creds is not None and creds[0] in self.oidc.providers:
                oidc = self._oidc(creds[0], creds[1])
            else:
                ident_id, username = self._basic(authorization, client_ip)
        elif kind == "bearer":
            token = authorization.strip().partition(" ")[2].strip()
            if self.oidc is not None and (self.tokens is None or not self.tokens.ours(token)):
                oidc = self._oidc(None, token)
            else:
                ident_id, username, cns, orgs, oidc = self._bearer(token)
                if not (common_names or organizations):
                    common_names, organizations = cns, orgs
        elif kind == "other":
            self._count.basic_fail.inc()
            scheme = authorization.strip().partition(" ")[0]
            raise Unauthorized(f"invalid credentials: unsupported authorization scheme {scheme!r}")
        return Identity(id=ident_id, username=username, client_ip=client_ip,
                        common_names=common_names, organizations=organizations, oidc=oidc)

    def _basic(self, authorization: str, client_ip: str | None) -> tuple[str, str]:
        try:
            found = self.basic.verify(authorization, client_ip)
        except BadCredentials as exc:
            self._count.basic_fail.inc()
            raise Unauthorized(f"invalid credentials: {exc}") from None
        except Busy as exc:
            self._count.basic_busy.inc()
            raise TooManyRequests(str(exc), detail={"retry_after": exc.retry_after}) from None
        self._count.basic_ok.inc()
        return found

    def _oidc(self, provider: str | None, token: str) -> Oidc:
        """Basic with a provider's name (``provider``), or a bearer token that is not a registry token."""
        from .oidc import OidcError

        try:
            if provider is not None:
                return self.oidc.verify_basic(provider, token)
            return self.oidc.verify_bearer(token)
        except OidcError as exc:
            if exc.reason == "foreign":  # no issuer we know: counted as the registry token it is not
                self._count.token["invalid"].inc()
                raise Unauthorized("invalid token: neither a token of this registry nor one of a configured "
                                   "OIDC issuer") from None
            if exc.reason == "unavailable":
                raise Unavailable(f"OIDC provider unavailable: {exc}") from None
            raise Unauthorized(f"invalid OIDC token: {exc}") from None

    def _bearer(self, token: str) -> tuple:
        from .token import InvalidToken

        if self.tokens is None:
            self._count.token["invalid"].inc()
            raise Unauthorized("invalid credentials: this server does not accept bearer tokens")
        try:
            found = self.tokens.verify(token)
        except InvalidToken as exc:
            self._count.token[exc.reason].inc()
            raise Unauthorized(f"invalid token: {exc}") from None
        self._count.token["valid"].inc()
        return found
