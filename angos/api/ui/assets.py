"""The UI's files and settings: ``GET /_ui/assets/<file>`` (``ui-asset``) serves the stylesheet
and the script from ``static/``; ``GET /_ui/theme?set=light|dark|system&back=<page>``
(``ui-asset``) remembers the visitor's theme in a cookie and returns to ``back`` (a ``/_ui/``
path only, so the link cannot send anyone elsewhere); ``GET /_ui/config`` (``ui-config``):
``{"name": ...}``.

The theme works without JavaScript (a link, a cookie, the page rendered with it); ``ui.js``
switches it in place and sets the same cookie.
"""

from __future__ import annotations

import os

from flask import redirect, request, send_from_directory, url_for

from ..gate import action
from ..http import json_response
from ..jobs import JobUnknown
from . import bp
from .common import THEME_COOKIE, THEMES, registry_name

STATIC = os.path.join(os.path.dirname(__file__), "static")
FILES = frozenset({"ui.css", "ui.js"})
YEAR = 365 * 86400


@bp.route("/config", methods=["GET"])
@action("ui-config")
def config():
    return json_response({"name": registry_name()})


@bp.route("/assets/<filename>", methods=["GET"])
@action("ui-asset")
def asset(filename):
    if filename not in FILES:
        raise JobUnknown("no such asset")
    return send_from_directory(STATIC, filename, max_age=3600)


def safe_back(value: str | None) -> str:
    """``value`` if it is a path of this UI (not ``//host``, not a scheme), else the home page."""
    if value and value.startswith("/_ui/") and "\\" not in value and not value.startswith("//"):
        return value
    return url_for("ui.browse_repositories")


@bp.route("/theme", methods=["GET"])
@action("ui-asset")
def set_theme():
    choice = request.args.get("set", "")
    resp = redirect(safe_back(request.args.get("back")), code=303)
    if choice in THEMES:
        resp.set_cookie(THEME_COOKIE, choice, max_age=YEAR, samesite="Lax", httponly=False, path="/_ui")
    else:  # "system" (or anything else): follow the system again
        resp.delete_cookie(THEME_COOKIE, path="/_ui")
    return resp
