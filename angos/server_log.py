"""What ``angos server`` logs about itself: gunicorn's log in angos' format, the access line,
and the TLS probes of clients that try https first.

- :class:`GunicornLogger` is gunicorn's ``logger_class``. gunicorn's error log
  (``gunicorn.error``: start, workers booting, signals) gets no handler of its
  own and propagates to the root handler of :mod:`angos.logs`, so it has the
  same format (text or JSON) and obeys the same ``ANGOS_LOG`` filters.
  gunicorn's own access log is never set up: :meth:`GunicornLogger.access`
  writes angos' line instead.
- The access line (logger ``angos.access``, INFO, one per request, off with
  ``[server] access_log = false``) is written by gunicorn's per-request hook,
  which runs after the whole response has gone out (a blob sent with
  ``sendfile`` included, or cut short by the client): ``bytes_out`` is what was
  really sent and ``duration_secs`` covers the transfer, with no work per chunk.
  Fields, in this order: ``request_id``, ``client_ip`` (after
  ``global.trusted_proxies``), ``identity`` (id or ``-``), ``method``, ``path``
  (as sent, query included, at most 2048 characters), ``action`` (the gate's
  action name, ``-`` for unknown routes), ``status``, ``bytes_in``,
  ``bytes_out``, ``duration_secs``, ``user_agent`` (at most 256 characters).
  What the app knows (id, address, identity, action) it leaves in the environ
  (:mod:`angos.api.request_id`); a request gunicorn refused before the app saw
  it (a malformed head) still gets a line, with ``-`` for those.
- :func:`tls_probe_answered` answers a TLS ClientHello on a plain-HTTP port
  (clients trying https first) before gunicorn would log it as a bad request.
"""

from __future__ import annotations

import logging

from gunicorn.glogging import Logger

from . import logs
from .digits import count

access_log = logging.getLogger("angos.access")

MAX_PATH = 2048
MAX_AGENT = 256


class GunicornLogger(Logger):
    def setup(self, cfg):
        level = self.error_log.level  # what ANGOS_LOG said for gunicorn.error (NOTSET: the default level)
        super().setup(cfg)
        # Drop the handlers gunicorn just installed and let records reach the root handler.
        for log in (self.error_log, self.access_log):
            for handler in list(log.handlers):
                log.removeHandler(handler)
        self.error_log.propagate = True
        self.error_log.setLevel(level)  # not gunicorn's loglevel: the ANGOS_LOG filters decide
        self.access_log.propagate = False

    @property
    def access_log_enabled(self):
        return logs.ACCESS_LOG

    def access(self, resp, req, environ, request_time):
        if not logs.ACCESS_LOG or not access_log.isEnabledFor(logging.INFO):
            return
        try:
            fields = access_fields(resp, req, environ, request_time)
        except Exception:  # noqa: BLE001 - a broken line must never break the request
            access_log.exception("could not build the access line")
            return
        access_log.info("%s %s %s", fields["method"], fields["path"], fields["status"],
                        extra={"access": fields, "request_id": fields["request_id"]})


def _bytes_in(environ) -> int:
    counted = environ.get("angos.input")
    if counted is not None:
        return counted.count
    length = environ.get("CONTENT_LENGTH") or ""
    return count(length) or 0


def _status(resp):
    code = getattr(resp, "status_code", None)
    if code is None and getattr(resp, "status", None):
        head = str(resp.status).split(None, 1)[0]
        code = count(head)
    return code


def access_fields(resp, req, environ, request_time) -> dict:
    environ = environ or {}
    path = getattr(req, "uri", None) or environ.get("RAW_URI") or environ.get("PATH_INFO") or "-"
    agent = environ.get("HTTP_USER_AGENT") or "-"
    return {
        "request_id": environ.get("angos.request_id") or "-",
        "client_ip": environ.get("angos.client_ip") or environ.get("REMOTE_ADDR") or "-",
        "identity": environ.get("angos.identity") or "-",
        "method": getattr(req, "method", None) or environ.get("REQUEST_METHOD") or "-",
        "path": path[:MAX_PATH],
        "action": environ.get("angos.action") or "-",
        "status": _status(resp) if resp is not None else None,
        "bytes_in": _bytes_in(environ),
        "bytes_out": int(getattr(resp, "sent", 0) or 0),
        "duration_secs": round(request_time.total_seconds(), 6),
        "user_agent": agent[:MAX_AGENT],
    }


# The first byte of every TLS record carrying a handshake (a ClientHello); no HTTP method starts with it.
_TLS_HANDSHAKE = 0x16
_NOT_TLS = (b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: 47\r\n"
            b"Connection: close\r\n\r\nthis port speaks plain HTTP; connect with http\n")


def tls_probe_answered(client, ip) -> bool:
    """On a plain-HTTP port: answer a TLS ClientHello here (True), or leave the connection to gunicorn.

    skopeo, podman and other clients told not to verify TLS try https first and fall back to
    http when that fails. gunicorn would read the ClientHello as a request line and log a
    WARNING ("Invalid request ... bare LF") for every such call. This peeks at the first byte
    (``MSG_PEEK``: nothing is consumed, so gunicorn parses a real request as usual; one system
    call per connection, bounded by the socket's header timeout) and, for a TLS handshake,
    answers the same ``400`` gunicorn would, logging one DEBUG line. A connection that closes
    or sends nothing within the header timeout is closed quietly, as gunicorn would."""
    import socket

    try:
        first = client.recv(1, socket.MSG_PEEK)
    except OSError:  # the header timeout (TimeoutError is an OSError) or a reset
        first = b""
    if first and first[0] != _TLS_HANDSHAKE:
        return False
    if first:
        logging.getLogger("angos.server").debug(
            "TLS handshake from %s on this plain-HTTP port (a client trying https before http, e.g. skopeo "
            "or podman with --tls-verify=false); answered 400", ip or "?")
        try:
            client.settimeout(1.0)  # best effort: a client that does not read gets nothing
            client.sendall(_NOT_TLS)
        except OSError:
            pass
    try:
        client.close()
    except OSError:
        pass
    return True
