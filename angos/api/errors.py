"""The one place domain errors become HTTP responses (the OCI error JSON).

Unknown routes and methods are answered in the same JSON shape; anything
unexpected is logged with its traceback and answered as a 500 without
internals. The one exception is the web UI: with ``[ui] enabled``, an error on
one of its ``/_ui/`` pages is an HTML page (:mod:`angos.api.ui.errors`; a 401
still carries the challenge), since a person reads it in a browser.
"""

from __future__ import annotations

import logging

from flask import current_app, request
from werkzeug.exceptions import HTTPException

from ..oci.errors import NameUnknown, OciError, Unavailable, Unsupported
from ..storage import StorageUnavailable
from . import token
from .http import oci_error_response

log = logging.getLogger("angos.api")


def _response(exc: OciError):
    """The OCI error JSON, or the UI's HTML page for the same error on a UI page."""
    if "ui" in current_app.blueprints:
        from .ui.errors import error_page, for_ui

        if for_ui():
            page = error_page(exc.status, exc.message)
            if page is not None:
                return page
    return oci_error_response(exc)


def register(app) -> None:
    @app.errorhandler(OciError)
    def _oci(exc: OciError):
        resp = _response(exc)
        if exc.status == 401:
            resp.headers["WWW-Authenticate"] = token.challenge()  # Bearer under /v2/, else Basic
            if request.path.startswith("/v2"):
                resp.headers["Docker-Distribution-API-Version"] = "registry/2.0"
        if exc.status == 416 and isinstance(exc.detail, dict) and "size" in exc.detail:
            resp.headers["Content-Range"] = f"bytes */{exc.detail['size']}"
        if exc.status == 429 and isinstance(exc.detail, dict) and "retry_after" in exc.detail:
            resp.headers["Retry-After"] = str(int(exc.detail["retry_after"]))
        return resp

    @app.errorhandler(StorageUnavailable)
    def _storage(exc):
        log.error("storage unavailable: %s", exc)
        return _response(Unavailable(str(exc)))

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException):
        if exc.code == 404:
            return _response(NameUnknown("no such endpoint", status=404))
        if exc.code == 405:
            return _response(Unsupported("method not allowed", status=405))
        err = OciError(exc.description or exc.name, status=exc.code)
        err.code = "UNSUPPORTED" if exc.code < 500 else "UNKNOWN"
        return _response(err)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        log.exception("unhandled error")
        err = OciError("internal server error", status=500)
        return _response(err)
