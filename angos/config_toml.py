"""The effective configuration written back as TOML (``angos check-config --print``).

:func:`to_toml` walks the validated :class:`~angos.config.Config` (every default
filled in, every file merged) and writes a document that loads into the same
configuration: durations as seconds, sizes as bytes, networks as CIDR strings.
With ``redact`` (the default) secrets are replaced by ``"<redacted>"``: the
value of any key whose name says it holds one (``password``, ``secret_key``,
anything with ``secret``, ``token`` or ``credential`` in its name, such as an
identity's argon2 hash, a downstream's or upstream's password, S3 secret keys
and the secrets later tables add under such names) and the password in any
``scheme://user:password@host`` URL (Redis), and any inline PEM block. File
paths of keys and certificates are not secrets and are shown.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import re

REDACTED = "<redacted>"
_SECRET_KEY = re.compile(r"password|secret|token|credential", re.I)
_URL_PASSWORD = re.compile(r"^([a-z][a-z0-9+.-]*://[^:/@\s]*):([^@/\s]+)@", re.I)
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def to_toml(cfg, redact: bool = True, header: str = "") -> str:
    data = _value(cfg, redact)
    out: list[str] = [f"# {line}" for line in header.splitlines()]
    _emit_table([], data, out)
    return "\n".join(out).lstrip("\n") + "\n"


# ------------------------------------------------------------------ Config -> plain data


def _value(obj, redact: bool, key: str = ""):
    from .config import LockStrategy

    if isinstance(obj, LockStrategy):
        if obj.kind in ("memory", "file"):
            return obj.kind
        return {obj.kind: _value(getattr(obj, obj.kind), redact)}
    if dataclasses.is_dataclass(obj):
        out = {}
        for f in dataclasses.fields(obj):
            if f.metadata.get("internal"):
                continue
            value = getattr(obj, f.name)
            if value is None:
                continue  # TOML has no null: an absent key means the same
            name = f.metadata.get("key", f.name)
            out[name] = _value(value, redact, name)
        return out
    if isinstance(obj, dict):
        return {k: _value(v, redact, k) for k, v in obj.items()}
    if isinstance(obj, (tuple, list)):
        return [_value(v, redact, key) for v in obj]
    if isinstance(obj, (ipaddress.IPv4Network, ipaddress.IPv6Network)):
        return str(obj)
    if isinstance(obj, str) and redact:
        if _SECRET_KEY.search(key) or "-----BEGIN" in obj:  # or an inline PEM key, whatever its key's name
            return REDACTED
        return _URL_PASSWORD.sub(lambda mt: f"{mt.group(1)}:{REDACTED}@", obj)
    return obj


# ------------------------------------------------------------------ plain data -> TOML text


def _is_table_array(value) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def _emit_table(path: list[str], table: dict, out: list[str], array: bool = False) -> None:
    scalars = {k: v for k, v in table.items() if not isinstance(v, dict) and not _is_table_array(v)}
    if path and (scalars or array or not table):
        name = ".".join(_key(p) for p in path)
        out.append("")
        out.append(f"[[{name}]]" if array else f"[{name}]")
    for k, v in scalars.items():
        out.append(f"{_key(k)} = {_scalar(v)}")
    for k, v in table.items():
        if isinstance(v, dict):
            _emit_table(path + [k], v, out)
        elif _is_table_array(v):
            for item in v:
                _emit_table(path + [k], item, out, array=True)


def _key(k: str) -> str:
    return k if _BARE_KEY.fullmatch(k) else _string(k)


def _string(s: str) -> str:
    # JSON's escapes are TOML's (\" \\ \n \t \uXXXX); DEL is the one character JSON leaves raw
    # that a TOML basic string must escape.
    return json.dumps(s).replace("\x7f", "\\u007f")


def _scalar(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return _string(v)
    if isinstance(v, list):
        return "[" + ", ".join(_scalar(x) for x in v) + "]"
    if isinstance(v, dict):  # an inline table inside an array (no such key today)
        return "{" + ", ".join(f"{_key(k)} = {_scalar(x)}" for k, x in v.items()) + "}"
    return _string(str(v))  # a value type a later table brings: shown, if not loadable
