"""What every UI page shares: :func:`page` renders a template inside ``base.html`` with the
registry's name, the breadcrumbs and the visitor's theme; the template filters format times,
sizes and digests the same way everywhere.

Breadcrumbs are ``(label, url)`` pairs, the last one (the page itself) with ``url`` ``None``.
"""

from __future__ import annotations

import time
from urllib.parse import urlencode
from datetime import datetime, timezone

from flask import current_app, render_template, request, url_for

from . import bp

THEMES = ("light", "dark")  # anything else (no cookie) follows the system
THEME_COOKIE = "angos-theme"


def registry_name() -> str:
    return current_app.extensions["angos.config"].ui.name


def theme() -> str:
    value = request.cookies.get(THEME_COOKIE, "")
    return value if value in THEMES else ""


# Query parameters that say which page this is (not what just happened on it): the theme links
# come back to the page with these, never with a notice a crafted link could carry.
PAGE_PARAMS = ("queue", "q", "n", "last", "after", "view")


def back_here() -> str:
    params = urlencode([(k, v) for k in PAGE_PARAMS for v in request.args.getlist(k)])
    return request.path + ("?" + params if params else "")


def home_crumb() -> tuple[str, str]:
    return "Repositories", url_for("ui.browse_repositories")


def page(template: str, title: str, crumbs: list[tuple[str, str | None]] | None = None, section: str = "",
         status: int = 200, **context):
    """Render ``template`` (which extends ``base.html``); ``section`` marks the current nav entry."""
    crumbs = crumbs if crumbs is not None else [(title, None)]
    return render_template(template, name=registry_name(), title=title, crumbs=crumbs, section=section,
                           theme=theme(), back=back_here(), **context), status


@bp.app_template_filter("when")
def when(unix: int | float | None) -> str:
    """Exact UTC time (for a ``title`` attribute or a table cell)."""
    if unix is None:
        return ""
    return datetime.fromtimestamp(unix, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


@bp.app_template_filter("iso")
def iso(unix: int | float | None) -> str:
    """RFC 3339 UTC time, for a ``<time datetime>`` attribute."""
    if unix is None:
        return ""
    return datetime.fromtimestamp(unix, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@bp.app_template_filter("ago")
def ago(unix: int | float | None, now: float | None = None) -> str:
    """Relative time: "just now", "5 minutes ago", "3 days ago" (the exact time goes on hover)."""
    if unix is None:
        return ""
    delta = (time.time() if now is None else now) - unix
    if delta < 0:
        return "in the future"
    for unit, seconds in (("year", 365 * 86400), ("month", 30 * 86400), ("day", 86400), ("hour", 3600),
                          ("minute", 60)):
        if delta >= seconds:
            count = int(delta // seconds)
            return f"{count} {unit}{'s' if count != 1 else ''} ago"
    return "just now"


@bp.app_template_filter("size")
def size(n: int | None) -> str:
    """Bytes in binary units with one decimal: 0 B, 812 B, 1.5 KiB, 27.3 MiB."""
    if n is None:
        return ""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return ""  # unreachable


@bp.app_template_filter("short")
def short(digest: str | None) -> str:
    """``sha256:0123456789ab`` (algorithm and the first 12 hex digits) for tables; full digest on hover."""
    if not digest:
        return ""
    algo, _, hexpart = digest.partition(":")
    return f"{algo}:{hexpart[:12]}" if hexpart else digest[:19]


@bp.app_template_filter("cell")
def cell(value) -> str:
    """A generic overview cell: lists joined, nothing for None."""
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value)
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)
