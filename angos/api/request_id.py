"""Request ids, and what the access line needs to know from inside the app.

:class:`RequestIds` wraps the whole WSGI app (outermost). For each request it

- takes the caller's ``X-Request-Id`` when it is sane (1 to 128 characters from
  ``A-Z a-z 0-9 . _ : / + = @ -``: what UUIDs, hex, base64 and most proxies'
  ids use), else makes a fresh one (32 hex digits), so nobody can put spaces,
  quotes or line breaks into the logs through it;
- puts it in :data:`angos.logs.REQUEST_ID` (every record logged while the
  request is served carries it) and in ``environ["angos.request_id"]``;
- answers it in the ``X-Request-Id`` response header (also on errors);
- counts the bytes of a chunked request body (it has no ``Content-Length``)
  with a thin wrapper around ``wsgi.input``. Bodies with a ``Content-Length``
  are left alone (uploads read them straight from the socket, see
  :func:`angos.api.http.body_chunks`); their length is the header's.

:func:`register` adds an ``after_request`` hook that leaves the client address
(after ``global.trusted_proxies``), the identity and the action in the environ
for the access line, which gunicorn writes once the response body has been
sent (:mod:`angos.server_log`), after Flask's request context is gone.
"""

from __future__ import annotations

import re
import uuid

from flask import g, request

from ..logs import REQUEST_ID

_SANE = re.compile(r"[A-Za-z0-9._:/+=@-]{1,128}")


def request_id_from(value: str | None) -> str:
    """The caller's id when it is sane, else a new one."""
    if value and _SANE.fullmatch(value):
        return value
    return uuid.uuid4().hex


class CountingInput:
    """``wsgi.input`` with a count of the bytes read through it (chunked bodies only)."""

    def __init__(self, stream):
        self._stream = stream
        self.count = 0

    def read(self, *args):
        data = self._stream.read(*args)
        self.count += len(data)
        return data

    def readline(self, *args):
        data = self._stream.readline(*args)
        self.count += len(data)
        return data

    def readlines(self, *args):
        lines = self._stream.readlines(*args)
        self.count += sum(len(line) for line in lines)
        return lines

    def __iter__(self):
        for line in self._stream:
            self.count += len(line)
            yield line


class RequestIds:
    def __init__(self, wsgi_app):
        self.wsgi_app = wsgi_app

    def __call__(self, environ, start_response):
        rid = request_id_from(environ.get("HTTP_X_REQUEST_ID"))
        environ["angos.request_id"] = rid
        # Cleared by the server worker before it reads the next request head on this connection.
        REQUEST_ID.set(rid)
        if "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower() and "wsgi.input" in environ:
            environ["wsgi.input"] = environ["angos.input"] = CountingInput(environ["wsgi.input"])

        def start(status, headers, exc_info=None):
            headers.append(("X-Request-Id", rid))
            return start_response(status, headers, exc_info)

        return self.wsgi_app(environ, start)


def identity_label(identity) -> str:
    """How the access line names a caller: its id, else its certificate's first common name, else "-"."""
    if identity is None:
        return "-"
    if identity.id:
        return identity.id
    if identity.common_names:
        return f"cn={identity.common_names[0]}"
    return "-"


def register(app) -> None:
    from .gate import client_ip

    @app.after_request
    def _for_the_access_line(response):
        env = request.environ
        env["angos.action"] = getattr(g, "action", None)
        env["angos.identity"] = identity_label(getattr(g, "identity", None))
        try:
            env["angos.client_ip"] = client_ip()
        except Exception:  # noqa: BLE001 - the line falls back to the TCP peer
            pass
        return response
