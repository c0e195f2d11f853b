"""Author timestamps: RFC 3339 with microseconds, always UTC.

Tag records store ``created_at`` in this form; replication forwards it
verbatim in ``X-Angos-Source-Timestamp``.
"""

from __future__ import annotations

from datetime import datetime, timezone

# A replicated author time before the Unix epoch cannot come from a real write: refused.
FLOOR = datetime(1970, 1, 1, tzinfo=timezone.utc)


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
        if ts.tzinfo is None or "T" not in value.upper():
            return None
        return ts.astimezone(timezone.utc)
    except (ValueError, OverflowError):  # e.g. year 1 at +14:00 falls off the calendar in UTC
        return None


def parse_source_ts(value: str | None) -> datetime | None:
    """The ``X-Angos-Source-Timestamp`` of a replicated write: None when absent or empty (a client write);
    ValueError, with a message for the client, when present but not an RFC 3339 time with a
    zone, or before the Unix epoch (:data:`FLOOR`). Future times are the caller's to clamp."""
    if value is None or not value.strip():
        return None  # absent or empty: a client write
    ts = parse_ts(value)
    if ts is None:
        raise ValueError(f"X-Angos-Source-Timestamp {value[:64]!r} is not an RFC 3339 time with a zone")
    if ts < FLOOR:
        raise ValueError(f"X-Angos-Source-Timestamp {value[:64]!r} is before 1970-01-01T00:00:00Z")
    return ts
