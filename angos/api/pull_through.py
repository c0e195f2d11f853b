"""The HTTP side of pull-through caching (the logic is in :mod:`angos.cache`).

- :func:`cache_for` gives a blueprint the cache when a namespace is
  pull-through, else None: a configuration lookup, no I/O, so ordinary
  namespaces keep their own path untouched.
- :func:`refuse_writes` (a ``before_request`` hook, after the access check)
  answers a push to a pull-through namespace with ``405 UNSUPPORTED``:
  content there comes from the upstream only. Deletes stay allowed (eviction).
- :class:`RegistryProxying` (WSGI middleware) serves the distribution-spec
  ``?ns=`` parameter: ``GET|HEAD /v2/<name>/...?ns=<host>``, where a repository
  declares ``namespace = "<host>"``, is routed to ``/v2/<repository>/<name>/...``
  before anything else sees it (so the access policy sees the namespace that
  is served) and answered with ``OCI-Namespace: <host>``. An ``ns`` no
  repository declares is ignored, a name that already starts with the
  repository is left alone (a mirror configured with the path), and ``ns``
  never redirects a write.
- :func:`stale_warning` renders why a stale manifest was served as a
  ``Warning`` header (RFC 9111's "110 Response is Stale").
"""

from __future__ import annotations

from urllib.parse import parse_qs

from flask import current_app, g, request

from ..oci.errors import PullThroughReadOnly

WRITE_ACTIONS = frozenset({"start-upload", "mount-blob", "update-upload", "complete-upload", "put-manifest"})


def cache_for(name: str):
    cache = current_app.extensions.get("angos.cache")
    if cache is None or cache.repository(name) is None:
        return None
    return cache


def refuse_writes():
    if g.get("action") not in WRITE_ACTIONS:
        return None
    cache = current_app.extensions.get("angos.cache")
    ns = (request.view_args or {}).get("name")
    found = cache.repository(ns) if cache is not None and ns else None
    if found is not None:
        urls = ", ".join(up.url for up in found[1].upstream)
        raise PullThroughReadOnly(f"{ns} is a pull-through cache of {urls}: push there instead "
                                  f"(deleting here evicts cached content)")
    return None


def stale_warning(why: str) -> str:
    text = "".join(c if 32 <= ord(c) < 127 and c not in '"\\' else " " for c in why)[:300]
    return f'110 - "Response is Stale: {text}"'


class RegistryProxying:
    """WSGI middleware for ``?ns=`` (see the module docstring)."""

    def __init__(self, wsgi_app, cfg):
        self.wsgi_app = wsgi_app
        self.hosts = {repo.namespace.lower(): key for key, repo in cfg.repository.items()
                      if repo.namespace is not None}

    def __call__(self, environ, start_response):
        if self.hosts and "ns=" in environ.get("QUERY_STRING", ""):
            rewritten = self._route(environ)
            if rewritten is not None:
                def start(status, headers, exc_info=None):
                    return start_response(status, [*headers, ("OCI-Namespace", rewritten)], exc_info)
                return self.wsgi_app(environ, start)
        return self.wsgi_app(environ, start_response)

    def _route(self, environ) -> str | None:
        if environ.get("REQUEST_METHOD") not in ("GET", "HEAD"):
            return None
        path = environ.get("PATH_INFO", "")
        if not path.startswith("/v2/") or path.startswith("/v2/_catalog") or len(path) <= 4:
            return None
        hosts = parse_qs(environ["QUERY_STRING"]).get("ns") or []
        if len(hosts) != 1:
            return None
        key = self.hosts.get(hosts[0].lower())
        if key is None:
            return None
        name = path[4:]
        if not (name == key or name.startswith(key + "/")):
            environ["PATH_INFO"] = f"/v2/{key}/{name}"
        return hosts[0]
