"""A scriptable HTTP server on 127.0.0.1, for tests that need another server to answer in exact
ways a real registry will not: a CDN, an upstream sending a bad manifest, a body without a length,
a redirect with an endless body, a listing that never ends. The ``scripted`` fixture in
tests/conftest.py makes them and stops them after the test.

- ``routes``: path (without query) -> handler(request) -> (status, headers, body). ``body`` is
  bytes or an iterable of bytes. Bytes get a ``Content-Length`` unless the headers set one; with
  ``Transfer-Encoding: chunked`` in the headers the body is sent in chunks instead (the receiver
  learns its size only at the end). :meth:`Scripted.route` adds a fixed answer for one method (a
  ``HEAD`` gets the ``GET`` answer's headers). A path with no route answers a JSON ``404``.
- ``seen``: (method, path with query, headers) of every request, in order of arrival.
- ``sent[path]``: body bytes written for ``path`` before the client went away. Read it through
  :meth:`Scripted.sent_when_done`, which waits until the handler has stopped writing.
"""

from __future__ import annotations

import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

NOT_FOUND = (404, {"Content-Type": "application/json"}, b'{"errors":[{"code":"NOT_FOUND","message":"no such route"}]}')
CHUNK = 64 * 1024


class Scripted:
    def __init__(self):
        self.routes: dict = {}
        self.seen: list[tuple[str, str, dict]] = []
        self.sent: dict[str, int] = {}
        self.done: dict[str, threading.Event] = {}
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _answer(self):
                path = self.path.split("?", 1)[0]
                with server._lock:
                    server.seen.append((self.command, self.path, dict(self.headers.items())))
                    server.sent.setdefault(path, 0)
                    finished = server.done.setdefault(path, threading.Event())
                try:
                    self._reply(path)
                finally:
                    finished.set()

            def _reply(self, path):
                route = server.routes.get(path)
                status, headers, body = route(self) if route else NOT_FOUND
                chunked = any(k.lower() == "transfer-encoding" and v.lower() == "chunked" for k, v in headers.items())
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                if not chunked and "Content-Length" not in headers:
                    self.send_header("Content-Length", str(len(body)) if isinstance(body, bytes) else "0")
                self.end_headers()
                if self.command == "HEAD":
                    return
                pieces = [body[i:i + CHUNK] for i in range(0, len(body), CHUNK)] if isinstance(body, bytes) else body
                try:
                    for piece in pieces:
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
                        server.sent[path] += len(piece)
                    if chunked:
                        self.wfile.write(b"0\r\n\r\n")
                except OSError:
                    self.close_connection = True  # the client closed the connection: stop sending

            do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = _answer

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def route(self, method: str, path: str, body: bytes, headers: dict | None = None, chunked: bool = False) -> None:
        """Answer ``method`` on ``path`` (and ``HEAD`` when ``method`` is ``GET``) with 200 and
        ``body``; any other method there gets the 404."""
        headers = dict(headers or {})
        if chunked:
            headers["Transfer-Encoding"] = "chunked"
        methods = {method, "HEAD"} if method == "GET" else {method}
        self.routes[path] = lambda r: (200, headers, body) if r.command in methods else NOT_FOUND

    def requests_for(self, method: str, pattern: str) -> list[dict]:
        """The headers of each ``method`` request whose path (without query) matches ``pattern``."""
        rx = re.compile(pattern)
        with self._lock:
            return [h for m, p, h in self.seen if m == method and rx.search(p.split("?", 1)[0])]

    def sent_when_done(self, path: str) -> int:
        """Body bytes sent for ``path`` once its handler has stopped: it stops when the body is all
        written or the client has closed the connection. A client that neither reads nor closes
        leaves the handler blocked, which fails here rather than hanging the suite."""
        finished = self.done.get(path)
        assert finished is not None, f"{path} was never requested"
        assert finished.wait(60), f"the server is still sending {path}: the client neither read it nor closed"
        return self.sent[path]

    def start(self) -> "Scripted":
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
