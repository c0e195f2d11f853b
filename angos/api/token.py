"""``GET /token`` and ``POST /token``: the registry token endpoint, and the challenges that send clients there.

The registry token flow, as Docker Hub and Harbor run it, is what docker,
podman, skopeo, containerd and oras expect: a refused request under ``/v2/``
answers ``401`` with ``WWW-Authenticate: Bearer realm="<this server>/token",
service="<service>",scope="repository:<name>:<actions>"``; the client asks
the realm for a token (with its basic credentials, or none), then repeats the
request with ``Authorization: Bearer <token>``.

- ``GET /token`` (action ``get-token``) authenticates the caller through the
  same :class:`~angos.auth.authenticate.Authenticator` as every request
  (basic credentials with argon2 and the per-source throttle, an OIDC token
  as the basic password of its provider's name or as a bearer token, a
  client certificate, or nothing for anonymous) and answers ``{token,
  access_token, expires_in, issued_at}`` (:class:`~angos.auth.token.TokenService`).
  Wrong credentials answer ``401`` with a Basic challenge (the endpoint
  itself takes basic credentials), a throttled source ``429``. A registry
  token is not exchanged for another (``401``): its lifetime is the bound.
  The policy is not asked: a token only says who the caller is, which the
  caller's credentials already say, and the policy decides every request
  made with it. Refusing tokens would protect nothing and would break the
  flow for every anonymous pull under a deny-by-default policy.
- ``POST /token`` is the OAuth2 form of the same request, which containerd
  (and so nerdctl, BuildKit and Kubernetes nodes) sends when it has
  credentials: ``grant_type=password`` with ``username`` and ``password`` in
  an ``application/x-www-form-urlencoded`` body of at most :data:`MAX_FORM`
  bytes, checked exactly as basic credentials, answered like ``GET``.
  ``grant_type=refresh_token`` answers ``400``: no refresh tokens are issued
  (an answer containerd takes as "ask with ``GET``"), and none is exchanged.
- ``scope`` (repeatable, or space separated; at most :data:`MAX_SCOPES`) is
  checked for shape and a valid repository name, then ignored: tokens carry
  no grants. ``service``, ``account``, ``client_id`` and ``offline_token``
  are accepted and ignored. The answer is never cached (``Cache-Control:
  no-store``).
- :func:`challenge` is the ``WWW-Authenticate`` value of a ``401``: Bearer
  under ``/v2/`` (scope from the refused action and namespace, none for
  ``GET /v2/`` itself), Basic everywhere else (the token endpoint, the UI a
  browser logs into, ``/_ext/``, ``/metrics``). Only one challenge is ever
  sent: docker applies every challenge it understands, and a Basic one
  beside Bearer makes it stop with ``no basic auth credentials``.
- The realm is ``[auth.token] realm`` when set, else this server's
  ``/token`` as the client reached it: ``https`` with ``[server.tls]``, else
  ``http``, and the request's ``Host`` (``X-Forwarded-Proto`` and
  ``X-Forwarded-Host`` from a trusted proxy); a ``Host`` that is not a plain
  host[:port] falls back to the bind address.

Counted in ``auth_token_requests_total{result}``: ``identified``,
``anonymous``, ``failure``, ``throttled``.
"""

from __future__ import annotations

import base64
import re
import time

from flask import Blueprint, current_app, g, request

from ..auth.authenticate import credential_kind
from ..oci.errors import NameInvalid, OciError, TooLarge, TooManyRequests, Unauthorized, Unsupported
from ..oci.reference import validate_name
from .gate import access, action, client_certificate, client_ip, from_trusted_proxy
from .http import json_response

bp = Blueprint("token", __name__)

MAX_SCOPES = 16
MAX_FORM = 8 * 1024  # an OAuth2 token request's form: credentials and a few scopes
_SCOPE = re.compile(r"([a-z0-9]+(?:\([a-z0-9]+\))?):([^:\s]+):([a-z*]+(?:,[a-z*]+)*)?")
_HOST = re.compile(r"(?:[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?|\[[0-9A-Fa-f:.]{2,45}\])(?::[0-9]{1,5})?")
_PULL = frozenset({"get-manifest", "get-blob", "get-referrers", "list-tags"})
_DELETE = frozenset({"delete-manifest", "delete-blob"})


def tokens():
    return current_app.extensions["angos.tokens"]


class _Counts:
    """``auth_token_requests_total`` children, bound on first use (as in angos.auth.authenticate)."""

    def __getattr__(self, name):
        from .. import metrics

        for result in ("identified", "anonymous", "failure", "throttled"):
            setattr(self, result, metrics.AUTH_TOKEN_REQUESTS.labels(result))
        return object.__getattribute__(self, name)


_count = _Counts()


@bp.route("/token", methods=["GET"])
@action("get-token")
def issue():
    authorization = request.headers.get("Authorization")
    if credential_kind(authorization) == "bearer" and (
            not access().oidc or tokens().ours(authorization.strip().partition(" ")[2].strip())):
        _count.failure.inc()
        raise Unauthorized("a registry token is not exchanged for another: send basic credentials or none")
    _check_scopes(request.args.getlist("scope"))
    return _issue(authorization)


@bp.route("/token", methods=["POST"])
@action("get-token")
def issue_oauth():
    """The OAuth2 form of the same request (containerd's with credentials): ``grant_type=password``
    with ``username`` and ``password`` in a form body, which are checked as basic credentials."""
    length = request.content_length
    if length is None:
        raise Unsupported("a token request body needs a Content-Length", status=411)
    if length > MAX_FORM:
        raise TooLarge(f"a token request body is at most {MAX_FORM} bytes")
    if request.mimetype != "application/x-www-form-urlencoded":
        raise Unsupported("a token request body is application/x-www-form-urlencoded", status=415)
    form = request.form
    grant = form.get("grant_type", "")
    if grant == "refresh_token":
        # Nothing here issues refresh tokens, so none can be valid. Clients then ask with GET.
        _count.failure.inc()
        raise Unsupported("refresh tokens are not issued: use grant_type=password or GET /token")
    if grant != "password":
        raise Unsupported(f"unsupported grant_type {grant[:64]!r}: use password")
    username, password = form.get("username", ""), form.get("password", "")
    if not username or not password or ":" in username:
        raise Unsupported("grant_type=password needs a username (without ':') and a password")
    _check_scopes(form.getlist("scope"))
    credentials = base64.b64encode(f"{username}:{password}".encode()).decode("ascii")
    return _issue(f"Basic {credentials}")


def _issue(authorization: str | None):
    cns, orgs = client_certificate()
    try:
        identity = access().authenticate(authorization, client_ip(), cns, orgs)
    except TooManyRequests:
        _count.throttled.inc()
        raise
    except OciError:
        _count.failure.inc()
        raise
    g.identity = identity
    token, expires_in, issued_at = tokens().issue(identity)
    (_count.anonymous if identity.anonymous else _count.identified).inc()
    return json_response({"token": token, "access_token": token, "expires_in": expires_in,
                          "issued_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(issued_at))},
                         headers={"Cache-Control": "no-store", "Pragma": "no-cache"})


def _check_scopes(values: list[str]) -> None:
    scopes = [s for v in values for s in v.split(" ") if s]
    if len(scopes) > MAX_SCOPES:
        raise Unsupported(f"at most {MAX_SCOPES} scopes per token request", status=400)
    for scope in scopes:
        m = _SCOPE.fullmatch(scope)
        if m is None:
            raise Unsupported(f"invalid scope {scope[:300]!r}", status=400)
        if m.group(1).startswith("repository"):
            validate_name(m.group(2))


# ------------------------------------------------------------------ challenges


def challenge() -> str:
    """The ``WWW-Authenticate`` value for a 401 answering the current request."""
    path = request.path
    if path != "/v2" and not path.startswith("/v2/"):
        return f'Basic realm="{current_app.config.get("ANGOS_REALM", "Angos")}", charset="UTF-8"'
    settings = current_app.extensions["angos.config"].auth.token
    value = f'Bearer realm="{settings.realm or _own_realm()}",service="{settings.service}"'
    scope = _scope(getattr(g, "action", None), (getattr(g, "request_fields", None) or {}).get("namespace"))
    return value + f',scope="{scope}"' if scope else value


def _scope(act: str | None, namespace: str | None) -> str | None:
    if act == "list-catalog":
        return "registry:catalog:*"
    if not act or not namespace:
        return None
    try:
        validate_name(namespace)  # never quote a client's odd bytes into a header
    except NameInvalid:
        return None
    actions = "pull" if act in _PULL else "delete" if act in _DELETE else "pull,push"
    return f"repository:{namespace}:{actions}"


def _own_realm() -> str:
    server = current_app.extensions["angos.config"].server
    # From our own TLS setting, not request.scheme: gunicorn takes X-Forwarded-Proto from any
    # loopback peer, trusted proxy or not.
    scheme, host = ("https" if server.tls is not None else "http"), request.host
    if from_trusted_proxy():
        forwarded = request.headers.get("X-Forwarded-Proto", scheme).split(",")[0].strip().lower()
        scheme = forwarded if forwarded in ("http", "https") else scheme
        host = request.headers.get("X-Forwarded-Host", host).split(",")[0].strip()
    if not _HOST.fullmatch(host or ""):
        bind = f"[{server.bind_address}]" if ":" in server.bind_address else server.bind_address
        host = f"{bind}:{server.port}"
    return f"{scheme}://{host}/token"
