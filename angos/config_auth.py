"""Configuration of identities: the ``[auth]`` tables and what they hold.

Role: the frozen dataclasses for ``[auth.identity.<name>]`` (basic
credentials), ``[auth.token]`` (the registry token flow), ``[auth.oidc.<name>]``
(OIDC issuers whose tokens are accepted) and ``[auth.webhook.<name>]``
(authorization webhooks), with the checks of their values. Loaded and
validated like every other table by :mod:`angos.config_load`;
:class:`angos.config.Config` holds the result as ``auth``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .config_values import _fail, _one_of, _positive, _webhook_token, check, parse_duration


@dataclass(frozen=True)
class Identity:
    username: str
    password: str


def _service_name(value):
    # Quoted into WWW-Authenticate headers and token claims: no quotes, spaces or control characters.
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}", value):
        raise ValueError(f"expected letters, digits and . _ : - (at most 128), got {value!r}")
    return value


def _token_realm(value):
    if not re.fullmatch(r"https?://[^/\s\"]+(/[^\s\"]*)?", value):
        raise ValueError(f"expected an http:// or https:// URL, got {value!r}")
    return value


@dataclass(frozen=True)
class TokenConfig:
    """``[auth.token]``: the registry token flow (angos.auth.token, angos.api.token)."""
    # How long an issued token is good for. Docker treats anything under 60 s as 60 s.
    lifetime_secs: int = field(default=300, metadata=check(
        lambda v: v if 60 <= v <= 86400 else _fail("must be between 60 and 86400 (one day)")))
    # A new signing key every this many days; the previous one keeps verifying its live tokens.
    key_rotation_days: int = field(default=30, metadata=check(
        lambda v: v if 1 <= v <= 3650 else _fail("must be between 1 and 3650")))
    # The challenge's service="..." and the tokens' audience; servers sharing storage must agree.
    service: str = field(default="angos", metadata=check(_service_name))
    # Absolute URL of the token endpoint in challenges. Unset: this server's /token as the client
    # reached it (scheme and Host, or X-Forwarded-Proto/-Host from a trusted proxy).
    realm: str | None = field(default=None, metadata=check(_token_realm))


# Signature algorithms an OIDC issuer may use: asymmetric only. ``none`` would accept unsigned
# tokens, and an HMAC algorithm (HS*) would verify with the issuer's *public* key as the secret,
# so anyone holding that key (everyone) could sign (angos.auth.oidc).
JWT_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")
GITHUB_ACTIONS_ISSUER = "https://token.actions.githubusercontent.com"


def _jwt_algorithms(values):
    if not values:
        raise ValueError("name at least one algorithm")
    for v in values:
        if v.lower() == "none":
            raise ValueError("'none' would accept unsigned tokens; it is never allowed")
        if v.upper().startswith("HS"):
            raise ValueError(f"{v!r} is an HMAC algorithm: checked with the issuer's public key, anyone could sign; "
                             f"use the issuer's asymmetric algorithm ({', '.join(JWT_ALGORITHMS)})")
        if v not in JWT_ALGORITHMS:
            raise ValueError(f"unknown algorithm {v!r}; valid: {', '.join(JWT_ALGORITHMS)}")
    return tuple(values)


def _https_url(value):
    if not re.fullmatch(r"https://[^/\s\"?#]+(/[^\s\"?#]*)?", value):
        raise ValueError(f"expected an https:// URL without query or fragment, got {value!r}")
    return value


def _required_claims(value):
    """``{claim = value}`` or ``{claim = [accepted, values]}``; values are strings, integers or booleans."""
    if not isinstance(value, dict):
        raise ValueError("expected a table of claim = value or claim = [values]")
    out = {}
    for name, want in value.items():
        values = want if isinstance(want, list) else [want]
        if not values or not all(isinstance(v, (str, int, bool)) for v in values):
            raise ValueError(f"claim {name!r}: expected a string, integer or boolean, or a non-empty array of them")
        out[name] = tuple(values)
    return out


@dataclass(frozen=True)
class OidcProvider:
    """``[auth.oidc.<name>]``: an issuer whose JWTs identify callers (angos.auth.oidc). The table's
    name is the Basic username that carries such a token as its password."""
    # "github": GitHub Actions, whose issuer is the default; "generic": any issuer, named by `issuer`.
    provider: str = field(default="generic", metadata=check(_one_of("generic", "github")))
    issuer: str | None = field(default=None, metadata=check(_https_url))
    # Unset: the jwks_uri of <issuer>/.well-known/openid-configuration.
    jwks_uri: str | None = field(default=None, metadata=check(_https_url))
    required_audience: str | None = None
    required_claims: dict = field(default_factory=dict, metadata={"parse": _required_claims})
    allowed_algorithms: tuple[str, ...] = field(default=("RS256",), metadata=check(_jwt_algorithms))
    clock_skew_tolerance: int = field(default=60, metadata=check(
        lambda v: v if 0 <= v <= 3600 else _fail("must be between 0 and 3600 seconds")))
    jwks_refresh_interval: int = field(default=3600, metadata=check(
        lambda v: v if 30 <= v <= 604800 else _fail("must be between 30 and 604800 seconds (a week)")))
    server_ca_bundle: str | None = None
    client_certificate_bundle: str | None = None
    client_private_key: str | None = None

    @property
    def issuer_url(self) -> str:
        return self.issuer or GITHUB_ACTIONS_ISSUER  # config_load refuses a generic provider without one


def _http_url(value):
    if not re.fullmatch(r"https?://[^/\s]+(/[^\s]*)?", value):
        raise ValueError("expected an http:// or https:// URL")  # not echoed: a URL may carry a secret
    return value


# An HTTP header name (RFC 9110 token).
HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
# Headers an authorization webhook request sets itself, or that describe the connection: never
# copied from the client's request.
_OWN_HEADERS = ("x-registry-", "x-forwarded-")
_CONNECTION_HEADERS = frozenset({"host", "connection", "content-length", "transfer-encoding", "te", "upgrade",
                                 "keep-alive", "proxy-connection", "trailer", "expect"})


def _forward_headers(values):
    seen = set()
    for v in values:
        low = v.lower()
        if not HEADER_NAME.fullmatch(v):
            raise ValueError(f"{v!r} is not a valid header name")
        if low.startswith(_OWN_HEADERS) or low in _CONNECTION_HEADERS:
            raise ValueError(f"{v!r} cannot be forwarded (the webhook request sets it, or it describes the "
                             f"connection)")
        if low in seen:
            raise ValueError(f"{v!r} is listed twice")
        seen.add(low)
    if len(values) > 32:
        raise ValueError("at most 32 headers")
    return tuple(values)


@dataclass(frozen=True)
class WebhookBasicAuth:
    username: str = field(metadata=check(lambda v: v if ":" not in v else _fail("must not contain ':'")))
    password: str = field(repr=False)


@dataclass(frozen=True)
class AuthorizationWebhook:
    """``[auth.webhook.<name>]``: an HTTP service asked after the access policy allows
    (angos.auth.webhook_authz). Named by ``authorization_webhook`` in ``[global]`` or a repository."""
    url: str = field(metadata=check(_http_url))
    # The whole call (connect, send, the answer's status line and headers); longer is a transport error.
    timeout_ms: int = field(default=1000, metadata=check(
        lambda v: v if 1 <= v <= 60000 else _fail("must be between 1 and 60000")))
    # How long an allow (2xx) or deny (401/403) answer is remembered; 0 asks on every request.
    cache_ttl: float = field(default=60.0, metadata={
        "parse": parse_duration, "check": lambda v: v if v <= 86400 else _fail("must be at most 1d")})
    # Headers of the client's request copied onto the webhook request (when the client sent them).
    forward_headers: tuple[str, ...] = field(default=(), metadata=check(_forward_headers))
    # How Angos authenticates to the webhook: a Bearer token, or basic credentials (not both).
    bearer_token: str | None = field(default=None, repr=False, metadata=check(_webhook_token))
    basic_auth: WebhookBasicAuth | None = None
    server_ca_bundle: str | None = None
    client_certificate_bundle: str | None = None
    client_private_key: str | None = None


@dataclass(frozen=True)
class AuthConfig:
    identity: dict[str, Identity] = field(default_factory=dict)
    webhook: dict[str, AuthorizationWebhook] = field(default_factory=dict)
    token: TokenConfig = field(default_factory=TokenConfig)
    oidc: dict[str, OidcProvider] = field(default_factory=dict)
    # Wrong passwords must not starve right ones (angos.auth.throttle). Per worker process:
    # argon2 checks running at once (64 MiB each with `angos argon`'s parameters) and waiting
    # for a slot (beyond that: 429 TOOMANYREQUESTS); per client address: failed checks allowed
    # per failure_window before its uncached logins get 429 (cached identities are unaffected).
    max_parallel_verifications: int = field(default=4, metadata=check(_positive))
    max_queued_verifications: int = field(default=32, metadata=check(_positive))
    max_failures_per_source: int = field(default=10, metadata=check(_positive))
    failure_window: float = field(default=60.0, metadata={"parse": parse_duration, "check": _positive})
