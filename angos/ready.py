"""One log line when a starting server answers: ``ready on http://127.0.0.1:8000``.

``angos server`` (and so ``make run``, whose first run also spends minutes on
the venv) says when requests will be served, so a person at a terminal need
not guess. The gunicorn master makes a :class:`ReadyLine` before any worker
forks. Each worker calls :meth:`ReadyLine.worker_up` once it has built the
app, just before it starts accepting (connections made meanwhile wait in the
listening socket's backlog, so from then on they are answered); the first
such call makes the master log one INFO line on ``angos.server``. Workers
that replace others later (a reload, a crash) change nothing: the line is
about the start.

Why a pipe and not a request to ``/readyz``: asking the server over HTTP
would count in its request metrics and access log, hold one of the loopback
address's connection slots, and, when storage is broken at that moment, add a
``503`` and a warning of its own. ``/readyz`` stays the probe for storage and
locks (README "Try it" waits for it); this line only says that the workers
answer.

The URL names the listening address, with loopback in place of a wildcard
bind (``0.0.0.0``, ``::``) and the real address in parentheses.
"""

from __future__ import annotations

import logging
import os
import threading

log = logging.getLogger("angos.server")

_WILDCARDS = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}


def ready_url(cfg) -> str:
    """Where this configuration's server is reached from this host, e.g. ``http://127.0.0.1:8000``."""
    bind = cfg.server.bind_address.strip("[]")
    host = _WILDCARDS.get(bind, bind)
    shown = f"[{host}]" if ":" in host else host
    return f"{'https' if cfg.server.tls is not None else 'http'}://{shown}:{cfg.server.port}"


def ready_line(cfg) -> str:
    """The line logged once the first worker answers."""
    line = f"ready on {ready_url(cfg)}"
    if cfg.server.bind_address.strip("[]") in _WILDCARDS:
        line += f" (listening on {cfg.server.bind_address} port {cfg.server.port})"
    return line


class ReadyLine:
    """A pipe from the workers to the master: made in the master before workers fork."""

    def __init__(self, cfg):
        self.line = ready_line(cfg)
        self._read, self._write = os.pipe()
        os.set_blocking(self._write, False)  # a worker never waits on it (the master drains it)

    def start(self) -> threading.Thread:
        """In the master: log the line at the first worker's word, then keep the pipe drained."""
        thread = threading.Thread(target=self._listen, name="angos-ready-line", daemon=True)
        thread.start()
        return thread

    def _listen(self) -> None:
        announced = False
        while True:
            try:
                chunk = os.read(self._read, 512)
            except OSError:
                return
            if not chunk:
                return
            if not announced:
                log.info(self.line)
                announced = True

    def worker_up(self) -> None:
        """In a worker, once its app is built; never raises (the line is informative only)."""
        try:
            os.write(self._write, b".")
        except OSError:
            pass
