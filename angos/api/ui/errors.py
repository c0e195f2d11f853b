"""Errors on the UI's pages as HTML pages, not the OCI error JSON: :func:`error_page` renders
one inside ``base.html``, called by :mod:`angos.api.errors` for a ``/_ui/`` path (see
:func:`for_ui`) and used for nothing else, so every other path keeps its JSON.

- 401: ``signin.html``, "Sign in required": what to do (the caller adds the same
  ``WWW-Authenticate`` challenge the API sends, so the browser asks for credentials);
- every other status: ``error.html`` with a title for the status and the error's message
  (autoescaped: a message may quote a client's namespace).

The page must render whatever failed: the error may come before the access check ran (a
cross-site form post, wrong credentials, an unrouted path): ``g.identity`` is then set to
the anonymous identity, so a template asking ``can()`` renders as for a visitor who may do
nothing, and nothing may rely on the request's view arguments. If rendering fails anyway,
:func:`error_page` returns ``None`` and the caller answers JSON.
"""

from __future__ import annotations

import logging

from flask import current_app, g, make_response, request

from ...auth import ANONYMOUS
from .common import home_crumb, page

log = logging.getLogger("angos.api.ui")

JSON_PATHS = frozenset({"/_ui/config"})  # the UI's JSON endpoint keeps the API's error shape
TITLES = {400: "Bad request", 401: "Sign in required", 403: "Not allowed", 404: "Not found",
          405: "Method not allowed", 409: "Conflict", 413: "Too large", 429: "Too many requests"}


def for_ui() -> bool:
    """Whether this request is for an HTML page of the UI (the UI is on and the path is its own)."""
    path = request.path
    return ("ui" in current_app.blueprints and (path == "/_ui" or path.startswith("/_ui/"))
            and path not in JSON_PATHS)


def error_page(status: int, message: str):
    """The HTML response for an error answered with ``status``; ``None`` if it cannot be rendered."""
    title = TITLES.get(status) or ("Service unavailable" if status in (502, 503, 504) else
                                   "Server error" if status >= 500 else "Request refused")
    template = "signin.html" if status == 401 else "error.html"
    retry = request.full_path.rstrip("?") if request.method == "GET" else None
    # Refused before the access check named the caller (cross-site post, wrong credentials,
    # unrouted path): the page is rendered as for an anonymous visitor, should it ask can().
    g.setdefault("identity", ANONYMOUS)
    try:
        resp = make_response(page(template, title, [home_crumb(), (title, None)], status=status,
                                  error_status=status, message=message, retry=retry))
    except Exception:  # noqa: BLE001 - the error page itself failed: the caller answers JSON instead
        log.exception("rendering the %d page of %s failed", status, request.path)
        return None
    resp.headers["Cache-Control"] = "no-store"
    return resp
