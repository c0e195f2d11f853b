"""A minimal HTTP client for blob transfers that costs the server-side as little CPU as possible.

Both servers share the machine's cores with this client, so the client must be
cheap and identical for both:

- downloads read into one reused 1 MiB buffer with ``readinto`` (no per-read
  allocation, nothing kept);
- uploads send request bodies from a file with ``socket.sendfile`` (zero-copy
  from the page cache), after headers written by ``http.client``;
- every transfer checks the status and, for downloads, the byte count, so a
  fast error never passes as a fast transfer.

The registry protocol flows (monolithic upload, POST then PUT, chunked PATCHes)
follow the ``Location`` each response returns, absolute (Distribution) or
relative (angos).
"""

from __future__ import annotations

import http.client
import json
from typing import BinaryIO
from urllib.parse import urlsplit

BUF = 1 << 20


class HttpError(RuntimeError):
    pass


class Client:
    """One keep-alive connection to ``127.0.0.1:port``."""

    def __init__(self, port: int, timeout: float = 600):
        self.port = port
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout, blocksize=BUF)

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None,
                expect: tuple[int, ...] = (200, 201, 202, 204)) -> http.client.HTTPResponse:
        """A small request; the response body is read and stored in ``resp.data``."""
        hdrs = dict(headers or {})
        if body is None and method in ("POST", "PUT", "PATCH"):
            hdrs.setdefault("Content-Length", "0")
        self.conn.request(method, path, body=body, headers=hdrs)
        resp = self.conn.getresponse()
        resp.data = resp.read()
        _check(resp, method, path, expect)
        return resp

    def send_file(self, method: str, path: str, fh: BinaryIO, offset: int, length: int,
                  headers: dict | None = None, expect: tuple[int, ...] = (201, 202)) -> http.client.HTTPResponse:
        """Send ``length`` bytes of ``fh`` from ``offset`` as the body, zero-copy."""
        conn = self.conn
        conn.putrequest(method, path, skip_accept_encoding=True)
        conn.putheader("Content-Type", "application/octet-stream")
        conn.putheader("Content-Length", str(length))
        for key, value in (headers or {}).items():
            conn.putheader(key, value)
        conn.endheaders()
        try:
            sent = conn.sock.sendfile(fh, offset, length)
        except (BrokenPipeError, ConnectionResetError):
            sent = -1  # the server answered early (an error); read what it said
        resp = conn.getresponse()
        resp.data = resp.read()
        _check(resp, method, path, expect)
        if sent != length:
            raise HttpError(f"{method} {path}: sent {sent} of {length} bytes")
        return resp

    def download(self, path: str, expect_length: int, headers: dict | None = None) -> int:
        """GET ``path`` and discard the body; returns the number of bytes read."""
        self.conn.request("GET", path, headers=headers or {})
        resp = self.conn.getresponse()
        if resp.status != 200:
            resp.data = resp.read()
            _check(resp, "GET", path, (200,))
        buf = memoryview(bytearray(BUF))
        readinto = resp.readinto
        total = 0
        while True:
            n = readinto(buf)
            if not n:
                break
            total += n
        if total != expect_length:
            raise HttpError(f"GET {path}: read {total} bytes, expected {expect_length}")
        return total

    # -- registry flows

    def start_upload(self, name: str) -> str:
        resp = self.request("POST", f"/v2/{name}/blobs/uploads/", expect=(202,))
        return location(resp)

    def upload_monolithic(self, name: str, digest: str, fh: BinaryIO, offset: int, length: int) -> None:
        """One request: ``POST /v2/<name>/blobs/uploads/?digest=`` with the body (angos)."""
        self.send_file("POST", f"/v2/{name}/blobs/uploads/?digest={digest}", fh, offset, length, expect=(201,))

    def upload_post_put(self, name: str, digest: str, fh: BinaryIO, offset: int, length: int) -> None:
        """Two requests: POST opens a session, PUT ``?digest=`` carries the whole body."""
        loc = self.start_upload(name)
        self.send_file("PUT", with_query(loc, digest=digest), fh, offset, length, expect=(201,))

    def upload_chunked(self, name: str, digest: str, fh: BinaryIO, offset: int, length: int, chunk: int) -> None:
        """POST, PATCHes of ``chunk`` bytes with ``Content-Range``, then an empty PUT ``?digest=``."""
        loc = self.start_upload(name)
        done = 0
        while done < length:
            n = min(chunk, length - done)
            resp = self.send_file("PATCH", loc, fh, offset + done, n,
                                  headers={"Content-Range": f"{done}-{done + n - 1}"}, expect=(202,))
            loc = location(resp)
            done += n
        self.request("PUT", with_query(loc, digest=digest), expect=(201,))

    def upload_bytes(self, name: str, digest: str, data: bytes) -> None:
        """Small blobs (config, manifest fixtures) with POST then PUT, which both servers accept."""
        loc = self.start_upload(name)
        self.request("PUT", with_query(loc, digest=digest), body=data,
                     headers={"Content-Type": "application/octet-stream"}, expect=(201,))

    def put_manifest(self, name: str, reference: str, body: bytes, media_type: str) -> str:
        resp = self.request("PUT", f"/v2/{name}/manifests/{reference}", body=body,
                            headers={"Content-Type": media_type}, expect=(201,))
        return resp.headers.get("Docker-Content-Digest", "")

    def blob_size(self, name: str, digest: str) -> int:
        resp = self.request("HEAD", f"/v2/{name}/blobs/{digest}", expect=(200,))
        return int(resp.headers["Content-Length"])


def location(resp: http.client.HTTPResponse) -> str:
    loc = resp.headers.get("Location")
    if not loc:
        raise HttpError(f"{resp.status} response without Location")
    parts = urlsplit(loc)
    return parts.path + (f"?{parts.query}" if parts.query else "")


def with_query(path: str, **params: str) -> str:
    sep = "&" if "?" in path else "?"
    return path + sep + "&".join(f"{k}={v}" for k, v in params.items())


def _check(resp: http.client.HTTPResponse, method: str, path: str, expect: tuple[int, ...]) -> None:
    if resp.status in expect:
        return
    body = getattr(resp, "data", b"") or b""
    try:
        detail = json.dumps(json.loads(body))[:500]
    except ValueError:
        detail = body[:500].decode(errors="replace")
    raise HttpError(f"{method} {path}: HTTP {resp.status} (expected {expect}): {detail}")
