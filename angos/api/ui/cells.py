"""Shaping long texts and wire times for the admin pages' table cells (jobs, replication, uploads).

- :func:`first_line` cuts an error to the line a table shows; the template puts the full text
  behind a ``<details class="error">`` (macro ``error`` in ``templates/_cells.html``), so a
  traceback never makes a row hundreds of pixels tall.
- :func:`unix` turns the RFC 3339 times the job and status records carry into Unix seconds for
  the ``when``/``ago`` filters; :func:`due` words a time that may lie ahead ("in 5 minutes").
"""

from __future__ import annotations

import time

from ...registry.timestamps import parse_ts
from . import bp

FIRST_LINE = 120  # characters of an error shown in the row; the rest is one click away


@bp.app_template_filter("first_line")
def first_line(text: str | None, limit: int = FIRST_LINE) -> str:
    """The first non-blank line of ``text``, cut to ``limit`` characters (with "…")."""
    if not text:
        return ""
    line = next((ln.strip() for ln in str(text).splitlines() if ln.strip()), "")
    return line if len(line) <= limit else line[:limit - 1] + "…"


@bp.app_template_filter("more_than_first_line")
def more_than_first_line(text: str | None, limit: int = FIRST_LINE) -> bool:
    """Whether :func:`first_line` hides anything of ``text``."""
    return bool(text) and first_line(text, limit) != str(text).strip()


@bp.app_template_filter("unix")
def unix(value) -> float | None:
    """Unix seconds from a number, or an RFC 3339 string; ``None`` for nothing or garbage."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    try:
        ts = parse_ts(str(value))
    except (TypeError, ValueError):
        return None
    return ts.timestamp() if ts is not None else None


@bp.app_template_filter("due")
def due(at: float | None, now: float | None = None) -> str:
    """"now" for a time that has come, else "in 3 minutes" (for a job's next run)."""
    if at is None:
        return ""
    delta = at - (time.time() if now is None else now)
    if delta < 60:
        return "now" if delta < 1 else "in under a minute"
    for unit, seconds in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if delta >= seconds:
            count = int(delta // seconds)
            return f"in {count} {unit}{'s' if count != 1 else ''}"
    return "now"  # unreachable


@bp.app_template_filter("duration")
def duration(secs: float | int | None) -> str:
    """A span of seconds in its largest unit: "45 s", "12 min", "3 h", "2 d"."""
    if secs is None:
        return ""
    secs = max(0, int(secs))
    for unit, seconds in (("d", 86400), ("h", 3600), ("min", 60)):
        if secs >= seconds:
            return f"{secs // seconds} {unit}"
    return f"{secs} s"
