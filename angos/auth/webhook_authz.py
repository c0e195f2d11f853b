"""Webhook authorization: an HTTP service has the last word on requests the access policy allows.

``[auth.webhook.<name>]`` declares a service; ``authorization_webhook = "<name>"`` in ``[global]``
names the one asked for every request, and in ``[repository."<key>"]`` the one asked for that
repository's namespaces instead (``""`` there: none). :class:`Webhooks` (built with each
:class:`~angos.auth.access.AccessControl`, so a configuration reload brings new settings) picks the
:class:`Webhook` for a namespace; the access gate (:mod:`angos.api.gate`) asks it only after the CEL
policy allowed, so a policy deny never reaches the service.

The call: ``GET <url>`` with no body; everything travels in headers (the shape forward-auth
services such as nginx ``auth_request`` or Traefik ``ForwardAuth`` expect):

- ``X-Forwarded-Method``, ``-Proto``, ``-Host``, ``-Uri``: the client's request as it reached us
  (the raw request target, query included); ``X-Forwarded-For``: ``identity.client_ip``.
- ``X-Registry-<Field>`` for every ``request.*`` field the policy saw (``request.artifact_type`` is
  ``X-Registry-Artifact-Type``): strings as they are, numbers in decimal, booleans ``true``/``false``,
  lists (``request.tags``) as JSON arrays.
- ``X-Registry-Identity-ID`` and ``X-Registry-Username`` (when known),
  ``X-Registry-Certificate-CN`` and ``-O`` (JSON arrays, when a verified client certificate has
  them), ``X-Registry-OIDC-Provider`` and ``X-Registry-OIDC-Claims`` (compact JSON) for an OIDC caller.
  Free-form strings (identity, username, fields) are percent-encoded UTF-8 where they hold ``%``, a
  control character or anything beyond ASCII, so a plain ``alice`` arrives as ``alice``.
- each header named in ``forward_headers`` that the client sent, copied as it is;
- ``Authorization`` from ``bearer_token`` or ``basic_auth`` (Angos authenticating to the service).

The answer: 2xx allows, 401 and 403 deny; both are remembered for ``cache_ttl`` seconds per
(identity, request fields, forwarded header values) in each worker process (at most
:data:`MAX_CACHED` per webhook). Anything else (3xx is not followed, 429, 5xx, other 4xx) and any
transport failure (refused, TLS, ``timeout_ms`` exceeded) deny without being remembered: fail
closed, and the next request asks again. ``X-Forwarded-*`` describe the request that caused a call
and are not part of the cache key. The response body is never read. With a ``cache_ttl``,
concurrent requests with one key share one call: the first asks, the others wait for its answer
(a burst of identical pulls costs the service one call, not one each; the call ends within
``timeout_ms``, so nobody waits longer). A shared decision is counted as
``cached_allow``/``cached_deny``, a shared failure like the caller's own.

Counted in ``auth_webhook_requests_total{webhook,result}`` (``allow``, ``deny``, ``unavailable``,
``transport_error``, ``cached_allow``, ``cached_deny``) and ``auth_webhook_duration_seconds{webhook}``
(calls actually made). Failures are logged with the webhook's name and the status or the error's
kind, at most once per :data:`WARN_INTERVAL` per webhook; never a URL, header or credential.

Under gunicorn's gevent workers the call is cooperative (other requests run while it waits) and
``timeout_ms`` bounds the whole call, a service trickling its answer included.
"""

from __future__ import annotations

import json
import logging
import ssl
import threading
import time
from collections import OrderedDict
from urllib.parse import quote

from ..config import ConfigError, _join
from ..flight import SingleFlight
from ..log_throttle import Throttled
from ..remote.unread import send

log = logging.getLogger("angos.auth.webhook")

MAX_CACHED = 16384
WARN_INTERVAL = 10.0
RESULTS = ("allow", "deny", "unavailable", "transport_error", "cached_allow", "cached_deny")
# Printable ASCII except "%": what a header value may carry without encoding.
_SAFE = "".join(chr(c) for c in range(0x20, 0x7F) if chr(c) != "%")


def _text(value: str) -> str:
    return quote(value, safe=_SAFE)


def _as_received(value: str) -> str:
    """A value from the client's request line or headers: as it came when it is printable ASCII
    (a raw URI already is), percent-encoded otherwise."""
    return value if value.isascii() and value.isprintable() else _text(value)


def _reason(exc: BaseException) -> str:
    return (getattr(exc, "strerror", None) or getattr(exc, "reason", None) or str(exc)).replace("\n", " ")


def _field_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, (tuple, list)):
        return json.dumps(list(value), separators=(",", ":"))
    return _text(str(value))


def _field_header(name: str) -> str:
    return "X-Registry-" + "-".join(p.capitalize() for p in name.split("_"))


def _oidc_headers(identity) -> dict:
    """An OIDC caller's provider and claims, when the identity carries them (``identity.oidc``)."""
    oidc = getattr(identity, "oidc", None)
    if oidc is None:
        return {}
    out = {}
    provider = getattr(oidc, "provider", None)
    if provider:
        out["X-Registry-OIDC-Provider"] = _text(str(provider))
    claims = getattr(oidc, "claims", None)
    if claims is not None:
        out["X-Registry-OIDC-Claims"] = json.dumps(claims, separators=(",", ":"), sort_keys=True,
                                                   ensure_ascii=True, default=str)
    return out


class _Metrics:
    """Metric children for one webhook, bound on first use (``angos.metrics`` must not be imported
    while the master validates the configuration; see :mod:`angos.auth.authenticate`)."""

    def __init__(self, name: str):
        self.name = name

    def __getattr__(self, attr):
        from .. import metrics

        self.results = {r: metrics.AUTH_WEBHOOK_REQUESTS.labels(self.name, r) for r in RESULTS}
        self.duration = metrics.AUTH_WEBHOOK_DURATION.labels(self.name)
        return object.__getattribute__(self, attr)


class Webhook:
    """One ``[auth.webhook.<name>]``: :meth:`allows` decides, remembering decisive answers."""

    def __init__(self, name: str, cfg, pool_size: int = 64):
        """``pool_size``: connections kept open for reuse (the worker's concurrent request limit, so
        a burst does not open and drop connections, nor log urllib3's "pool is full")."""
        self.name = name
        self.cfg = cfg
        self.pool_size = pool_size
        self.timeout = cfg.timeout_ms / 1000.0
        self._session = None  # made on the first call: a validating master never opens a pool
        self._cache: OrderedDict[tuple, tuple[float, bool]] = OrderedDict()
        self._flights = SingleFlight()  # calls being made, by cache key
        self._lock = threading.Lock()
        self._metrics = _Metrics(name)
        self._warned = Throttled(WARN_INTERVAL)

    # ------------------------------------------------------------ start-up checks

    def check_files(self) -> None:
        """Load the CA bundle and client certificate now: unreadable files fail start-up in one line."""
        cfg, where = self.cfg, _join("auth.webhook", self.name)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        if cfg.server_ca_bundle:
            try:
                ctx.load_verify_locations(cafile=cfg.server_ca_bundle)
            except (OSError, ssl.SSLError) as exc:
                raise ConfigError(f"{where}.server_ca_bundle: cannot load {cfg.server_ca_bundle!r}: "
                                  f"{_reason(exc)}") from None
        if cfg.client_certificate_bundle:
            try:
                ctx.load_cert_chain(cfg.client_certificate_bundle, cfg.client_private_key)
            except (OSError, ssl.SSLError) as exc:
                raise ConfigError(f"{where}.client_certificate_bundle: cannot load {cfg.client_certificate_bundle!r} "
                                  f"with the key {cfg.client_private_key!r}: {_reason(exc)}") from None

    # ------------------------------------------------------------ the decision

    def allows(self, identity, fields: dict, headers=None, origin: dict | None = None) -> bool:
        """Whether the service allows this request.

        ``fields``: the request fields the policy saw (``action`` included); ``headers``: the
        client's request headers (anything with a case-insensitive ``get``), read only for
        ``forward_headers``; ``origin``: ``method``, ``proto``, ``host``, ``uri`` of the client's
        request, sent as ``X-Forwarded-*``.
        """
        forwarded = tuple((h, headers.get(h)) for h in self.cfg.forward_headers) if headers is not None else ()
        forwarded = tuple((h, v) for h, v in forwarded if v is not None)
        try:
            key = (identity, tuple(sorted(fields.items())), forwarded)
            hash(key)
        except TypeError:  # an unhashable field or identity: ask without the cache
            key = None
        if key is None or self.cfg.cache_ttl <= 0:  # every request asks
            return bool(self._ask(self._request_headers(identity, fields, forwarded, origin))[0])
        hit = self._cached(key)
        if hit is not None:
            self._metrics.results["cached_allow" if hit else "cached_deny"].inc()
            return hit
        asked = []  # set by this request's own call; empty when it waited for another's

        def call() -> tuple[bool | None, str]:
            asked.append(True)
            decision, result = self._ask(self._request_headers(identity, fields, forwarded, origin))
            if decision is not None:
                self._remember(key, decision)  # before the flight ends, so a late request finds it
            return decision, result

        decision, result = self._flights.do(key, call)
        if not asked:  # counted here; the call counted itself
            self._metrics.results[result if decision is None else
                                  "cached_allow" if decision else "cached_deny"].inc()
        return bool(decision)

    def _cached(self, key: tuple) -> bool | None:
        hit = self._cache.get(key)
        return hit[1] if hit is not None and hit[0] > time.monotonic() else None

    def _remember(self, key: tuple, allowed: bool) -> None:
        now = time.monotonic()
        with self._lock:
            self._cache.pop(key, None)
            if len(self._cache) >= MAX_CACHED:
                # Entries are in insertion order and share one TTL: expired ones are at the front.
                while self._cache and next(iter(self._cache.values()))[0] <= now:
                    self._cache.popitem(last=False)
                if len(self._cache) >= MAX_CACHED:
                    self._cache.popitem(last=False)
            self._cache[key] = (now + self.cfg.cache_ttl, allowed)

    def _request_headers(self, identity, fields: dict, forwarded: tuple, origin: dict | None) -> dict:
        out = {}
        if origin:
            for part in ("method", "proto", "host", "uri"):
                if origin.get(part):
                    out["X-Forwarded-" + part.capitalize()] = _as_received(str(origin[part]))
        if identity.client_ip:
            out["X-Forwarded-For"] = identity.client_ip
        for name, value in fields.items():
            out[_field_header(name)] = _field_value(value)
        if identity.id is not None:
            out["X-Registry-Identity-ID"] = _text(identity.id)
        if identity.username is not None:
            out["X-Registry-Username"] = _text(identity.username)
        if identity.common_names:
            out["X-Registry-Certificate-CN"] = _field_value(identity.common_names)
        if identity.organizations:
            out["X-Registry-Certificate-O"] = _field_value(identity.organizations)
        out.update(_oidc_headers(identity))
        out.update(forwarded)
        if self.cfg.bearer_token is not None:
            out["Authorization"] = f"Bearer {self.cfg.bearer_token}"
        return out

    def _ask(self, headers: dict) -> tuple[bool | None, str]:
        """(True (2xx), False (401/403), or None: no decision (another status, or no answer); the
        result it was counted as)."""
        started = time.monotonic()
        try:
            status = self._call(headers)
        except Exception as exc:  # noqa: BLE001 - whatever failed, the request is denied (fail closed)
            self._metrics.duration.observe(time.monotonic() - started)
            self._metrics.results["transport_error"].inc()
            self._warn("no answer (%s)", _kind(exc, self.timeout))
            return None, "transport_error"
        self._metrics.duration.observe(time.monotonic() - started)
        if 200 <= status < 300:
            decision, result = True, "allow"
        elif status in (401, 403):
            decision, result = False, "deny"
        else:
            decision, result = None, "unavailable"
            self._warn("answered %d, which is no decision", status)
        self._metrics.results[result].inc()
        return decision, result

    def _call(self, headers: dict) -> int:
        session = self._session or self._open()
        auth = (self.cfg.basic_auth.username, self.cfg.basic_auth.password) if self.cfg.basic_auth else None
        deadline = _deadline(self.timeout)
        try:
            # The status line and headers are all we need; the body is never read (not even a
            # redirect's, which session.get would read whole: remote/unread.py).
            resp = send(session, "GET", self.cfg.url, headers=headers, auth=auth, timeout=(self.timeout, self.timeout),
                        verify=self.cfg.server_ca_bundle or True,
                        cert=((self.cfg.client_certificate_bundle, self.cfg.client_private_key)
                              if self.cfg.client_certificate_bundle else None))
            resp.close()
            return resp.status_code
        except BaseException as exc:
            if deadline is not None and exc is deadline:
                raise TimeoutError("the whole call took longer than timeout_ms") from None
            raise
        finally:
            if deadline is not None:
                deadline.close()

    def _open(self):
        import requests
        from requests.adapters import HTTPAdapter

        session = requests.Session()
        session.trust_env = False  # no proxy or CA bundle from the environment: the configuration decides
        adapter = HTTPAdapter(pool_connections=1, pool_maxsize=self.pool_size, max_retries=0)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        self._session = session
        return session

    def _warn(self, msg: str, *args) -> None:
        suppressed = self._warned.allow()
        if suppressed is None:
            return
        more = f" ({suppressed} more failures since the last warning)" if suppressed else ""
        log.warning("authorization webhook %r: " + msg + "; request denied (fail closed, not cached)%s",
                    self.name, *args, more)


def _deadline(seconds: float):
    """A gevent timeout bounding the whole call when sockets are cooperative (gunicorn's gevent
    workers); None otherwise (the connect and read timeouts still bound each step)."""
    try:
        from gevent import Timeout, monkey
    except ImportError:  # pragma: no cover - gevent is a dependency
        return None
    if not monkey.is_module_patched("socket"):
        return None
    return Timeout.start_new(seconds)


def _kind(exc: BaseException, timeout: float) -> str:
    """What went wrong, without the URL or headers an exception's text may quote."""
    import requests

    if isinstance(exc, (requests.Timeout, TimeoutError)):
        return f"timed out after {timeout * 1000:.0f} ms"
    if isinstance(exc, requests.exceptions.SSLError):
        return "TLS error"
    if isinstance(exc, requests.ConnectionError):
        return "connection failed"
    return type(exc).__name__


class Webhooks:
    """Which :class:`Webhook` (if any) is asked about a namespace: the repository's
    ``authorization_webhook`` when it sets one (``""``: none), else the global one."""

    def __init__(self, cfg):
        self.cfg = cfg
        pool = cfg.global_.max_concurrent_requests
        self.hooks = {name: Webhook(name, wc, pool) for name, wc in cfg.auth.webhook.items()}
        self._global = cfg.global_.authorization_webhook or None
        self._by_repo = {key: repo.authorization_webhook or None for key, repo in cfg.repository.items()
                         if repo.authorization_webhook is not None}
        self.active = self._global is not None or any(self._by_repo.values())
        self._memo: dict[str, Webhook | None] = {}

    def check_files(self) -> None:
        for hook in self.hooks.values():
            hook.check_files()

    def for_namespace(self, namespace: str | None) -> Webhook | None:
        if not self.active:
            return None
        if not namespace or not self._by_repo:
            return self.hooks.get(self._global) if self._global else None
        try:
            return self._memo[namespace]
        except KeyError:
            pass
        key, _ = self.cfg.repository_for(namespace)
        name = self._by_repo[key] if key in self._by_repo else self._global
        hook = self.hooks.get(name) if name else None
        if len(self._memo) < MAX_CACHED:
            self._memo[namespace] = hook
        return hook
