"""An HTTP reverse proxy in front of a real upstream registry, on 127.0.0.1.

It forwards every request unchanged and streams the answer back, counting
requests per ``(method, path)`` (how tests prove "one upstream fetch per
blob"), and can misbehave on purpose for paths matching a pattern:

- ``status``: answer that HTTP status instead (e.g. 500) without asking the upstream;
- ``corrupt``: flip one byte of the body (a blob or manifest whose digest is wrong);
- ``truncate``: send only the first N bytes of the body, then close;
- ``drip``: send the first N bytes, then stall for S seconds before each further byte;
- ``delay``: wait S seconds before answering at all (a stall before the headers);
- ``redirect_loop``: answer 307 to the same URL forever;
- ``hold``: wait until an event is set before answering (to line up concurrent requests).

``rate`` (bytes/second) slows every body down, so a transfer stays in flight.
"""

from __future__ import annotations

import http.client
import re
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "te", "trailer", "upgrade"}


class Proxy:
    def __init__(self, target: str, rate: int | None = None):
        parts = urlsplit(target)
        self.target_host, self.target_port = parts.hostname, parts.port
        self.rate = rate
        self.counts: Counter = Counter()
        self.faults: list[tuple[re.Pattern, dict]] = []
        self._lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.host = f"127.0.0.1:{self.port}"

    def start(self) -> "Proxy":
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def fault(self, pattern: str, **behaviour) -> None:
        self.faults.append((re.compile(pattern), behaviour))

    def clear(self) -> None:
        self.faults.clear()

    def count(self, method: str, pattern: str) -> int:
        rx = re.compile(pattern)
        with self._lock:
            return sum(n for (m, p), n in self.counts.items() if m == method and rx.search(p))

    def _behaviour(self, path: str) -> dict:
        for rx, behaviour in self.faults:
            if rx.search(path):
                return behaviour
        return {}

    def _handler(self):
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _relay(self):
                path = self.path.split("?", 1)[0]
                with proxy._lock:
                    proxy.counts[(self.command, path)] += 1
                b = proxy._behaviour(path)
                if "hold" in b:
                    b["hold"].wait(30)
                if "delay" in b:
                    time.sleep(b["delay"])  # the injected fault: a slow answer
                if "status" in b:
                    self.send_response(b["status"])
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if b.get("redirect_loop"):
                    self.send_response(307)
                    self.send_header("Location", self.path)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP and k.lower() != "host"}
                conn = http.client.HTTPConnection(proxy.target_host, proxy.target_port, timeout=60)
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                size = resp.getheader("Content-Length")
                out_len = int(size) if size is not None else None
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() in HOP or k.lower() == "content-length":
                        continue
                    self.send_header(k, v)
                if out_len is not None:
                    self.send_header("Content-Length", str(out_len))
                self.end_headers()
                if self.command == "HEAD":
                    conn.close()
                    return
                sent = 0
                flipped = False
                while True:
                    chunk = resp.read(64 * 1024)
                    if not chunk:
                        break
                    if b.get("corrupt") and not flipped:
                        chunk = bytes([chunk[0] ^ 0xFF]) + chunk[1:]
                        flipped = True
                    if "truncate" in b and sent + len(chunk) > b["truncate"]:
                        self.wfile.write(chunk[:b["truncate"] - sent])
                        self.wfile.flush()
                        self.close_connection = True
                        conn.close()
                        return
                    if "drip" in b and sent + len(chunk) > b["drip"][0]:
                        head = max(b["drip"][0] - sent, 0)
                        self.wfile.write(chunk[:head])
                        self.wfile.flush()
                        for i in range(head, len(chunk)):
                            time.sleep(b["drip"][1])  # the injected fault: one byte at a time
                            self.wfile.write(chunk[i:i + 1])
                            self.wfile.flush()
                        sent += len(chunk)
                        continue
                    self.wfile.write(chunk)
                    sent += len(chunk)
                    if proxy.rate:
                        time.sleep(len(chunk) / proxy.rate)  # the simulated link's bandwidth
                conn.close()

            do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _relay

        return Handler
