"""Configuration values: the error type, unit parsers and the checks that dataclass fields name.

Role: what every configuration table's fields share. ``check(fn)`` is a
field's ``metadata``: the loader (:mod:`angos.config_load`) calls ``fn`` on
the parsed value and reports a ``ValueError`` from it under the field's
dotted key. ``parse_size`` and ``parse_duration`` turn ``"10MiB"``- and
``"30m"``-style strings (or plain numbers) into bytes and seconds.
"""

from __future__ import annotations

import ipaddress
import re

from .oci.errors import AngosError


class ConfigError(AngosError):
    pass


# ---------------------------------------------------------------- value parsers

_SIZE_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3,
               "gb": 1000**3, "t": 1000**4, "tb": 1000**4, "kib": 1024, "mib": 1024**2,
               "gib": 1024**3, "tib": 1024**4}
_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_size(value) -> int:
    """``"5MiB"`` → 5242880; plain integers are bytes."""
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 0:
            raise ValueError("must not be negative")
        return value
    if isinstance(value, str):
        m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", value)
        if m and m.group(2).lower() in _SIZE_UNITS:
            return int(float(m.group(1)) * _SIZE_UNITS[m.group(2).lower()])
    raise ValueError(f"expected a size such as 5MiB, got {value!r}")


def parse_duration(value, examples: str = "30m, 24h or 2d") -> float:
    """``"30m"`` → 1800.0 seconds; ``"1h30m"`` works too; plain numbers are seconds.
    ``examples`` goes into the error message, so it can fit the option being parsed
    (``--poll-interval`` takes milliseconds, ``--orphan-grants`` days)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if value < 0:
            raise ValueError("must not be negative")
        return float(value)
    if isinstance(value, str):
        parts = re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)", value.strip())
        if parts and "".join(a + b for a, b in parts) == value.strip():
            return sum(float(n) * _DURATION_UNITS[u] for n, u in parts)
    raise ValueError(f"expected a duration such as {examples}, got {value!r}")


def _positive(value):
    if value <= 0:
        raise ValueError("must be greater than zero")
    return value


def _one_of(*choices):
    def check(value):
        if value not in choices:
            raise ValueError(f"must be one of {', '.join(repr(c) for c in choices)}, got {value!r}")
        return value
    return check


def _regexes(values):
    for v in values:
        try:
            re.compile(v)
        except re.error as exc:
            raise ValueError(f"invalid regex {v!r}: {exc}") from None
    return tuple(values)


def _networks(values):
    out = []
    for v in values:
        try:
            out.append(ipaddress.ip_network(v, strict=False))
        except ValueError:
            raise ValueError(f"invalid IP address or CIDR {v!r}") from None
    return tuple(out)


# An instance's name travels in X-Angos-Source-Instance and in conflict records: a host-name-like
# token, so it is safe in a header, a log line and a metric label.
def check(fn):
    """Field metadata: a validator/converter applied after type checking."""
    return {"check": fn}

def _webhook_token(value):
    # Sent as "Authorization: Bearer <token>": a header value, so no spaces or control characters.
    if not re.fullmatch(r"[\x21-\x7e]+", value):
        raise ValueError("must be non-empty printable ASCII without spaces")
    return value


def _fail(msg):
    raise ValueError(msg)
