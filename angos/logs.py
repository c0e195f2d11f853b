"""Logging set-up: levels from ``ANGOS_LOG``, one line format for every logger, the request id.

Levels: ``ANGOS_LOG`` (or ``RUST_LOG``, with ``::`` read as ``.``) is a comma
list: a bare level sets the root level, ``module=level`` sets one logger, e.g.
``info,angos.replication=debug``.

Format: every record, ours and gunicorn's (``angos.server_log`` routes
gunicorn's error log here), goes through the one stderr handler this module
installs, as ``text`` (the default) or ``json``:

- text: ``2026-07-01T12:00:00.123Z INFO angos.api: message``; a record logged
  while a request is served starts its message with ``request_id=…``, and the
  access line is all ``key=value`` pairs (logfmt, ``request_id`` first);
- json: one object per line with the stable keys ``ts``, ``level``, ``logger``,
  ``pid``, ``msg``, then ``request_id`` when the record belongs to a request, the
  access fields as keys of their own on ``angos.access`` lines, and ``exc``
  (the traceback) when there is one.

The format comes from ``$ANGOS_LOG_FORMAT`` when set (also for commands that
log before reading a configuration), else from ``[global] log_format``
(:func:`use_format`, called once the configuration is loaded).

Request id: :data:`REQUEST_ID` is a context variable the HTTP layer sets for
the request being served (``angos.api.request_id``). Under gevent every
greenlet has its own context, so concurrent requests in one worker never see
each other's id; a filter on the handler stamps it on every record as
``record.request_id``.
"""

from __future__ import annotations

import contextvars
import json
import logging
import os
import re
import sys
import time

_LEVELS = {"trace": logging.DEBUG, "debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING,
           "warning": logging.WARNING, "error": logging.ERROR, "off": logging.CRITICAL + 10}
FORMATS = ("text", "json")

REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("angos_request_id", default=None)


def parse_filters(spec: str) -> tuple[int, dict[str, int]]:
    root = logging.INFO
    modules: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        if "=" in part:
            name, _, level = part.partition("=")
            # Tolerate "module = level": a directive must not vanish over spacing.
            name, level = name.strip(), level.strip()
            if level.lower() in _LEVELS:
                modules[name.replace("::", ".")] = _LEVELS[level.lower()]
        elif part.lower() in _LEVELS:
            root = _LEVELS[part.lower()]
        else:
            modules[part.replace("::", ".")] = logging.DEBUG  # a bare module name means "everything"
    return root, modules


def _utc(created: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created)) + f".{int(created % 1 * 1000):03d}Z"


# Printable ASCII but space, '"', '=' and backslash: such a value needs no quotes.
_PLAIN = re.compile(r'[!#-<>-\[\]-~]+')


def _logfmt_value(value) -> str:
    """A value for a ``key=value`` pair: bare when plain, else a JSON string (quotes, escapes, no newlines)."""
    text = "-" if value is None else str(value)
    if _PLAIN.fullmatch(text):
        return text
    return json.dumps(text, ensure_ascii=False)


def logfmt(fields: dict) -> str:
    return " ".join(f"{k}={_logfmt_value(v)}" for k, v in fields.items())


class RequestIdFilter(logging.Filter):
    """Stamps ``record.request_id`` with the request being served in this greenlet/thread (or None)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "request_id", None) is None:
            record.request_id = REQUEST_ID.get()
        return True


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, "access", None)
        msg = logfmt(fields) if fields is not None else record.getMessage()
        rid = getattr(record, "request_id", None)
        if rid and fields is None:
            msg = f"request_id={rid} {msg}"
        line = f"{_utc(record.created)} {record.levelname} {record.name}: {msg}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        elif record.stack_info:
            line += "\n" + self.formatStack(record.stack_info)
        return line


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {"ts": _utc(record.created), "level": record.levelname, "logger": record.name,
               "pid": record.process, "msg": record.getMessage()}
        rid = getattr(record, "request_id", None)
        if rid:
            out["request_id"] = rid
        fields = getattr(record, "access", None)
        if fields is not None:
            out.update((k, v) for k, v in fields.items() if k not in out)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        elif record.stack_info:
            out["exc"] = self.formatStack(record.stack_info)
        return json.dumps(out, ensure_ascii=False, default=str)


_FORMATTERS = {"text": TextFormatter, "json": JsonFormatter}
_handler: logging.Handler | None = None


def env_format() -> str | None:
    """``$ANGOS_LOG_FORMAT`` when it names a format (anything else is ignored with a warning)."""
    value = os.environ.get("ANGOS_LOG_FORMAT", "").strip().lower()
    return value if value in FORMATS else None


def setup_logging(fmt: str | None = None) -> None:
    """Install the one stderr handler on the root logger, with levels from ``ANGOS_LOG``."""
    global _handler
    spec = os.environ.get("ANGOS_LOG") or os.environ.get("RUST_LOG") or "info"
    root_level, modules = parse_filters(spec)
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(_FORMATTERS[env_format() or fmt or "text"]())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(root_level)
    for name, level in modules.items():
        logging.getLogger(name).setLevel(level)
    _handler = handler
    bad = os.environ.get("ANGOS_LOG_FORMAT", "").strip()
    if bad and env_format() is None:
        logging.getLogger("angos.logs").warning("ANGOS_LOG_FORMAT=%r is not one of %s; using %s", bad,
                                                ", ".join(FORMATS), fmt or "text")


def use_format(fmt: str) -> None:
    """Switch the line format to ``[global] log_format`` (``$ANGOS_LOG_FORMAT`` wins when set)."""
    if _handler is None:
        setup_logging(fmt)
        return
    chosen = env_format() or fmt
    if not isinstance(_handler.formatter, _FORMATTERS[chosen]):
        _handler.setFormatter(_FORMATTERS[chosen]())


def apply_config(cfg) -> None:
    """What a loaded configuration says about logging: the format and whether to log requests."""
    global ACCESS_LOG
    use_format(cfg.global_.log_format)
    ACCESS_LOG = cfg.server.access_log


# Whether gunicorn's per-request hook writes the access line (``[server] access_log``). Set in the
# server's master from the configuration; workers forked after a reload see the new value.
ACCESS_LOG = True
