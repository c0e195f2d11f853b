"""A webhook receiver for the tests: a real HTTP server on 127.0.0.1 that records every POST.

``Receiver(token)`` listens on ``port`` (a free one by default) once started. Each delivery is
kept as a :class:`Delivery` with its headers, raw body, parsed JSON, arrival time and whether its
``X-Registry-Signature-256`` is the HMAC-SHA256 of the body keyed with ``token`` (checked here, with
``hmac.compare_digest``, independently of the server's code). ``status`` is what it answers, after
the statuses queued in ``script`` (one per request; a 3xx points ``Location`` back at the receiver);
``hang()`` makes it hold every request open (until :meth:`release` or :meth:`stop`), as a receiver
that accepted the connection and never answers. ``stop()`` closes the port, so nothing answers.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from ..conftest import free_port, wait_for


@dataclass
class Delivery:
    path: str
    headers: dict
    body: bytes
    doc: dict
    signature_ok: bool
    at: float = 0.0  # time.monotonic() on arrival

    @property
    def kind(self) -> str:
        return self.doc.get("kind")


class Receiver:
    def __init__(self, token: str | None = None, port: int | None = None, status: int = 204):
        self.token = token
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}/hook"
        self.status = status
        self.script: list[int] = []  # statuses for the next requests, before ``status`` again
        self.deliveries: list[Delivery] = []
        self.seen = 0  # requests that arrived, answered or not
        self._lock = threading.Lock()
        self._hold = threading.Event()
        self._hold.set()
        self._server: ThreadingHTTPServer | None = None

    def start(self) -> "Receiver":
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                at = time.monotonic()
                with receiver._lock:
                    receiver.seen += 1
                    status = receiver.script.pop(0) if receiver.script else receiver.status
                receiver._hold.wait(120)  # a hanging receiver: the server's timeout must give up first
                sig = self.headers.get("X-Registry-Signature-256", "")
                ok = receiver.token is not None and hmac.compare_digest(
                    "sha256=" + hmac.new(receiver.token.encode(), body, hashlib.sha256).hexdigest(), sig)
                with receiver._lock:
                    receiver.deliveries.append(Delivery(self.path, dict(self.headers), body, json.loads(body), ok, at))
                self.send_response(status)
                if 300 <= status < 400:
                    self.send_header("Location", receiver.url)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def hang(self) -> None:
        self._hold.clear()

    def release(self) -> None:
        self._hold.set()

    def stop(self) -> None:
        self._hold.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def of(self, kind: str | None = None, namespace: str | None = None) -> list[Delivery]:
        with self._lock:
            return [d for d in self.deliveries
                    if (kind is None or d.kind == kind) and (namespace is None or d.doc.get("namespace") == namespace)]

    def wait(self, kind: str, namespace: str, n: int = 1, timeout: float = 60) -> list[Delivery]:
        def enough():
            found = self.of(kind, namespace)
            return found if len(found) >= n else None

        return wait_for(enough, timeout=timeout, what=f"{n} {kind} deliveries for {namespace}")
