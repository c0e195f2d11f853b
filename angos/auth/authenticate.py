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
- ``Bearer <registry token>``: :class:`~angos.auth.token.TokenService`. The
  token's identity (id, username; its certificate names when this connection
  has no verified certificate of its own). An invalid, expired or revoked
  token raises ``Unauthorized``.
- anything else (another scheme, a bearer value no verifier knows): ``Unauthorized``,
  never silently anonymous.

:func:`credential_kind` names the kind without verifying (the gate challenges
``GET /v2/`` only for callers that sent nothing). Another credential kind (an
OIDC JWT as the Basic password with the provider name as username, or as a
Bearer value) is one more branch in :meth:`Authenticator.authenticate` that
returns an Identity.

Counted in ``auth_attempts_total{method,result}`` (``basic``/``mtls``:
``success``, ``failure``, ``throttled``) and
``auth_token_verifications_total{result}`` (``valid``, ``invalid``,
``expired``, ``revoked``).
"""

from __future__ import annotations

from ..oci.errors import TooManyRequests, Unauthorized
from .basic import BadCredentials, BasicAuth
from .identity import Identity
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


class Authenticator:
    def __init__(self, basic: BasicAuth, tokens=None):
        """``tokens``: the :class:`~angos.auth.token.TokenService` (None: bearer tokens are refused)."""
        self.basic = basic
        self.tokens = tokens
        self._count = _Counters()

    def authenticate(self, authorization: str | None, client_ip: str | None,
                     common_names: tuple[str, ...] = (), organizations: tuple[str, ...] = ()) -> Identity:
        if common_names or organizations:
            self._count.mtls_ok.inc()
        kind = credential_kind(authorization)
        ident_id = username = None
        if kind == "basic":
            ident_id, username = self._basic(authorization, client_ip)
        elif kind == "bearer":
            ident_id, username, cns, orgs = self._bearer(authorization.strip().partition(" ")[2].strip())
            if not (common_names or organizations):
                common_names, organizations = cns, orgs
        elif kind == "other":
            self._count.basic_fail.inc()
            scheme = authorization.strip().partition(" ")[0]
            raise Unauthorized(f"invalid credentials: unsupported authorization scheme {scheme!r}")
        return Identity(id=ident_id, username=username, client_ip=client_ip,
                        common_names=common_names, organizations=organizations)

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
