"""Logging set-up from ``ANGOS_LOG`` (or ``RUST_LOG``, with ``::`` read as ``.``).

The value is a comma list: a bare level sets the root level, ``module=level``
sets one logger, e.g. ``info,angos.replication=debug``.
"""

from __future__ import annotations

import logging
import os
import sys

_LEVELS = {"trace": logging.DEBUG, "debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING,
           "warning": logging.WARNING, "error": logging.ERROR, "off": logging.CRITICAL + 10}


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


def setup_logging() -> None:
    spec = os.environ.get("ANGOS_LOG") or os.environ.get("RUST_LOG") or "info"
    root_level, modules = parse_filters(spec)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(root_level)
    for name, level in modules.items():
        logging.getLogger(name).setLevel(level)
