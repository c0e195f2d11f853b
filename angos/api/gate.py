"""The access gate: every route declares its action; the policy runs before the handler.

``@action("get-blob")`` marks a view. ``check_access`` (a ``before_request``
hook) resolves the caller and the request, asks the policy, and raises
UNAUTHORIZED (anonymous caller, answered 401 with a challenge:
:func:`angos.api.token.challenge`) or DENIED (authenticated caller, 403)
when it refuses. Views read the identity from ``g.identity``.

The probes ``/healthz`` and ``/readyz`` answer everyone without asking the
policy or looking at credentials: they reveal nothing, and a load balancer
or a Kubernetes probe has none to send. ``/metrics`` (``metrics``) answers
clients in ``server.metrics_allow`` (loopback by default) without
credentials; anyone else gets the policy's answer. The address is the one
``identity.client_ip`` holds, so a client a trusted proxy forwards is judged
by its own address, not by the proxy's.

Two more exceptions to "the policy decides": ``GET /token`` (``get-token``)
authenticates by itself and asks no policy (see :mod:`angos.api.token`), and
a ``GET /v2/`` from a caller that sent no credentials at all (nor a client
certificate) is challenged whenever some policy could refuse an anonymous
caller, even where the policy would let it through: clients only log in, or
fetch a token, after that challenge. A caller with an anonymous token, and
every other request, gets the policy's answer.

What the policy sees:

- ``identity``: from basic credentials or a registry token (wrong ones are
  a 401 before any policy runs; :mod:`angos.auth.authenticate`),
  ``client_ip`` and, on TLS with a client CA, the verified client
  certificate's common names and organizations.
- ``identity.client_ip`` is the TCP peer, unless that peer is one of
  ``global.trusted_proxies``: then ``X-Forwarded-For`` is read right to left
  and the first address that is not itself a trusted proxy is the client
  (falling back to ``X-Real-IP``). Headers from untrusted peers are ignored,
  so nobody can spoof an address by sending them.
- ``request``: ``action`` and the fields that apply to it —
  ``namespace``/``digest``/``reference``/``uuid`` from the URL (a digest
  reference also fills ``digest``); ``digest`` from ``?digest=`` on upload
  start/close and from ``?mount=``; ``from`` only on ``mount-blob``; ``n`` and
  ``last`` on ``list-*`` actions; ``artifact_type`` on ``get-referrers``;
  ``queue`` on the job administration actions; ``tags`` (a list) on a
  by-digest ``put-manifest`` with ``?tag=``; ``cache_fill`` on ``get-manifest``
  and ``get-blob`` in a pull-through namespace: true when the content is not
  cached, so serving it fetches from the upstream (a cached mutable tag is
  false; if its revalidation finds new content upstream, the fetch is asked
  again with ``cache_fill`` true, and refused it serves the cached copy).
  Fields that do not apply are absent, never null.
- A by-digest ``put-manifest`` with ``?tag=`` values is allowed only if the
  policy also allows ``put-manifest`` with each of those tags as
  ``request.reference`` (as a push by that tag would be asked), so a rule
  about tag names cannot be bypassed by pushing by digest.
- After the policy allows, the authorization webhook that applies to the
  namespace (:mod:`angos.auth.webhook_authz`) is asked with the same identity
  and fields; its refusal is answered like a policy's (401 anonymous, else
  403). :func:`can`, :func:`allows_fill` and :func:`granted` ask it too.
- ``POST .../blobs/uploads/?mount=`` is the ``mount-blob`` action, not
  ``start-upload``. :func:`can` lets a view ask about another action for the
  same caller (a mount checks ``get-blob`` on its source namespace).
"""

from __future__ import annotations

import ipaddress

from flask import current_app, g, request

from ..digits import count
from ..auth.authenticate import credential_kind
from ..auth.tls import peer_names
from ..oci.errors import Denied, Unauthorized

_URL_FIELDS = {"name": "namespace", "namespace": "namespace", "repository": "namespace", "digest": "digest",
               "reference": "reference", "uuid": "uuid"}
_JOB_ACTIONS = frozenset({"list-jobs", "list-failed-jobs", "retry-job", "delete-job"})
_PROBES = frozenset({"healthz", "readyz"})


def action(name: str):
    def mark(view):
        view.angos_action = name
        return view
    return mark


def access():
    return current_app.extensions["angos.access"]


# ------------------------------------------------------------------ client address


def _parse_ip(value: str):
    value = value.strip()
    try:
        return ipaddress.ip_address(value)
    except ValueError:
        pass
    # "1.2.3.4:5678" or "[::1]:5678"
    host = value[1:value.find("]")] if value.startswith("[") else value.rsplit(":", 1)[0]
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _trusted(ip, proxies) -> bool:
    return any(ip in net for net in proxies if net.version == ip.version)


def from_trusted_proxy() -> bool:
    """Whether the TCP peer is one of ``global.trusted_proxies`` (its forwarding headers count)."""
    proxies = access().cfg.global_.trusted_proxies
    peer = _parse_ip(request.remote_addr) if proxies and request.remote_addr else None
    return peer is not None and _trusted(peer, proxies)


def client_ip() -> str | None:
    remote = request.remote_addr
    proxies = access().cfg.global_.trusted_proxies
    if not proxies or not remote:
        return remote
    peer = _parse_ip(remote)
    if peer is None or not _trusted(peer, proxies):
        return remote
    forwarded = request.headers.get("X-Forwarded-For")
    if forwarded:
        hops = [_parse_ip(h) for h in forwarded.split(",") if h.strip()]
        for hop in reversed(hops):
            if hop is None:
                break  # garbage in the chain: stop trusting it here
            if not _trusted(hop, proxies):
                return str(hop)
        else:
            if hops and hops[0] is not None:
                return str(hops[0])  # every hop is a trusted proxy: the origin is the leftmost
        return remote
    real = request.headers.get("X-Real-IP")
    if real:
        ip = _parse_ip(real)
        if ip is not None:
            return str(ip)
    return remote


def may_scrape_freely() -> bool:
    """Whether the client is in ``server.metrics_allow`` (it reads /metrics without credentials)."""
    nets = access().cfg.server.metrics_allow
    ip = _parse_ip(client_ip() or "") if nets else None
    if ip is None:
        return False
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # a dual-stack listener sees IPv4 clients as ::ffff:a.b.c.d
    return _trusted(ip, nets)


def client_certificate() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The verified client certificate's (common names, organizations), cached per connection."""
    tls = access().cfg.server.tls
    if tls is None or not tls.client_ca_bundle:
        return (), ()
    sock = request.environ.get("gunicorn.socket")
    if sock is None or not hasattr(sock, "getpeercert"):  # gevent's SSLSocket is not an ssl.SSLSocket
        return (), ()
    names = getattr(sock, "_angos_peer_names", None)
    if names is None:
        names = peer_names(sock)
        try:
            sock._angos_peer_names = names
        except AttributeError:
            pass
    return names


# ------------------------------------------------------------------ request fields


def request_fields(act: str) -> dict:
    fields: dict = {"action": act}
    for key, value in (request.view_args or {}).items():
        target = _URL_FIELDS.get(key)
        if target is not None:
            fields[target] = value
    ref = fields.get("reference")
    if ref is not None and ":" in ref:
        fields["digest"] = ref
    if not request.query_string:
        return fields  # skip parsing an empty query string (most requests)
    args = request.args
    if act == "mount-blob":
        fields["digest"] = args["mount"]
        if args.get("from"):
            fields["from"] = args["from"]
    elif act in ("start-upload", "complete-upload"):
        if args.get("digest"):
            fields["digest"] = args["digest"]
    elif act.startswith("list-"):
        n = count(args.get("n"))
        if n is not None:
            fields["n"] = n
        if args.get("last") is not None:
            fields["last"] = args["last"]
    elif act == "get-referrers":
        if args.get("artifactType"):
            fields["artifact_type"] = args["artifactType"]
    elif act == "put-manifest" and "digest" in fields and "tag" in args:
        fields["tags"] = tuple(args.getlist("tag"))
    if act in _JOB_ACTIONS and args.get("queue"):
        fields["queue"] = args["queue"]
    return fields


# ------------------------------------------------------------------ the hook


def check_access():
    view = current_app.view_functions.get(request.endpoint) if request.endpoint else None
    act = getattr(view, "angos_action", None)
    if act is None:
        return None  # unknown routes fall through to the 404/405 handlers
    if act == "start-upload" and "mount" in request.args:
        act = "mount-blob"  # one endpoint, two actions: the policy sees which
    g.action = act
    if act == "get-token":
        return None  # the token endpoint authenticates by itself and asks no policy (angos.api.token)
    if act in _PROBES or (act == "metrics" and may_scrape_freely()):
        return None  # no credentials read, no policy asked (see the module docstring)
    ac = access()
    cns, orgs = client_certificate()
    authorization = request.headers.get("Authorization")
    fields = request_fields(act)
    g.request_fields = fields  # before authenticating: a 401's challenge names the scope from them
    identity = ac.authenticate(authorization, client_ip(), cns, orgs)
    g.identity = identity
    if (act == "get-api-version" and identity.anonymous and ac.challenges_anonymous
            and credential_kind(authorization) == "none"):
        # How clients learn where to log in: docker and skopeo send credentials (or fetch a
        # token) only after GET /v2/ challenged them, whatever the policy would say.
        raise Unauthorized("authentication required")
    cache = current_app.extensions.get("angos.cache")
    if cache is not None and act in ("get-manifest", "get-blob"):
        fill = cache.would_fill(fields.get("namespace"), act, fields.get("reference"), fields.get("digest"))
        if fill is not None:
            fields["cache_fill"] = fill
    allowed = ac.is_allowed(identity, act, fields)
    if allowed and "tags" in fields:
        as_tag_push = {k: v for k, v in fields.items() if k != "digest"}
        allowed = all(ac.is_allowed(identity, act, {**as_tag_push, "reference": t}) for t in fields["tags"])
    if allowed:
        allowed = _webhook_allows(identity, fields)  # after the policy: a policy deny never calls it
    if not allowed:
        if identity.anonymous:
            raise Unauthorized(f"authentication required for {act}")
        raise Denied(f"{act} denied")
    return None


def _webhook_allows(identity, fields: dict) -> bool:
    """The word of the authorization webhook that applies to the namespace (True when none does).
    Asked at most once per request for the same fields (a page of changes asks per namespace)."""
    hook = access().webhooks.for_namespace(fields.get("namespace"))
    if hook is None:
        return True
    memo = g.setdefault("webhook_decisions", {})
    key = (hook.name, tuple(sorted(fields.items())))
    if key not in memo:
        memo[key] = hook.allows(identity, fields, request.headers, _origin())
    return memo[key]


def _origin() -> dict:
    """The client's request as the webhook's ``X-Forwarded-*`` headers describe it."""
    scheme = "https" if access().cfg.server.tls is not None else "http"
    uri = request.environ.get("RAW_URI") or request.full_path.rstrip("?")
    return {"method": request.method, "proto": scheme, "host": request.host, "uri": uri}


def allows_fill() -> bool:
    """Whether the policy (and webhook) let this pull-through read fetch from the upstream
    (``cache_fill`` true)."""
    fields = {**g.request_fields, "cache_fill": True}
    return access().is_allowed(g.identity, g.action, fields) and _webhook_allows(g.identity, fields)


def can(act: str, **fields) -> bool:
    """Ask the policy (and webhook) about another action for the current caller (e.g. mount's
    source read, so a mount cannot read what the webhook refuses)."""
    fields = {"action": act, **fields}
    return access().is_allowed(g.identity, act, fields) and _webhook_allows(g.identity, fields)


def granted(act: str, **fields) -> bool:
    """Whether a rule *explicitly* allows ``act``: a deny-by-default policy applies and lets it through.
    For operator overrides (``repoint-immutable-tag``) that an allow-all policy must not grant. The
    webhook, when one applies, must allow it too."""
    fields = {"action": act, **fields}
    return access().grants_explicitly(g.identity, act, fields) and _webhook_allows(g.identity, fields)
