"""Author timestamps: RFC 3339 with microseconds, always UTC.

Tag records store ``created_at`` in this form; replication forwards it
verbatim in ``X-Angos-Source-Timestamp``.
"""

from __future__ import annotations

from datetime import datetime, timezone


def now() -> datetime:
    return datetime.now(timezone.utc)


def format_ts(ts: datetime) -> str:
    return ts.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_ts(value: str | None) -> datetime | None:
    """Parse an RFC 3339 timestamp; None for anything empty or malformed."""
    if not value or not isinstance(value, str):
        return None
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        ts = datetime.fromisoformat(text)
    except ValueError:
        return None
    if ts.tzinfo is None or "T" not in value.upper():
        return None
    return ts.astimezone(timezone.utc)
