"""Blob HEAD/GET (with a single ``Range``) and DELETE.

GET from the filesystem returns the open file through ``wsgi.file_wrapper`` so
the server sends it with zero-copy ``sendfile``; other servers get a bounded
read loop. On S3 a GET answers 307 to a presigned URL instead when
``global.enable_blob_redirect`` is on and the client did not send
``X-Angos-No-Redirect``; HEAD and empty blobs are always answered here.

In a pull-through namespace (:mod:`angos.cache`) a blob that is not stored
yet is answered from the upstream: a HEAD with the upstream's size, a GET by
streaming the fill as it lands. Once headers are sent, a fill that fails can
only cut the response short, which the client sees as an incomplete body.
"""

from __future__ import annotations

import errno
import logging
import re

from flask import Blueprint, current_app, request

from ...digits import PATTERN as DIGITS
from ...oci.digest import Digest
from ...oci.errors import OciError, RangeNotSatisfiable
from ...oci.reference import validate_name
from ..actors import current_actor
from ..gate import action
from ..http import CHUNK, empty, redirect, redirect_allowed, registry
from ..pull_through import cache_for

bp = Blueprint("v2_blobs", __name__)
log = logging.getLogger("angos.api")

# Longer numbers than digits.PATTERN allows make the header malformed, which means serving it all.
_RANGE = re.compile(rf"^bytes=({DIGITS})?-({DIGITS})?$")


def _parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """Return (start, end) inclusive for a single satisfiable range, None to serve everything."""
    if not header:
        return None
    m = _RANGE.fullmatch(header.strip().replace(" ", ""))
    if not m:
        return None  # multiple or malformed ranges: RFC 9110 lets us ignore Range
    first, last = m.group(1) or "", m.group(2) or ""
    if first == "" and last == "":
        return None
    if first == "":
        length = int(last)
        if length == 0:
            raise RangeNotSatisfiable(detail={"size": size})
        return max(0, size - length), size - 1
    start = int(first)
    end = int(last) if last else size - 1
    if start >= size or end < start:
        raise RangeNotSatisfiable(detail={"size": size})
    return start, min(end, size - 1)


def _limited(fh, count: int):
    try:
        while count > 0:
            block = fh.read(min(CHUNK, count))
            if not block:
                return
            count -= len(block)
            yield block
    finally:
        fh.close()


@bp.route("/v2/<path:name>/blobs/<digest>", methods=["GET", "HEAD"])
@action("get-blob")
def get_blob(name: str, digest: str):
    validate_name(name)
    d = Digest.parse(digest)
    reg = registry()
    cache = cache_for(name)
    if cache is not None:  # pull-through: stored, or fetched once and streamed (angos.cache.blobs)
        served = cache.get_blob(name, d, head=request.method == "HEAD")
        if served.handle is None:
            if request.method == "GET":
                reg.record_blob_pull(name, d, current_actor)
            return _from_upstream(cache, name, d, served)
        handle = served.handle
    else:
        handle = reg.blobs.stat(name, d)
    rng = _parse_range(request.headers.get("Range"), handle.size)
    start, end = rng if rng else (0, handle.size - 1)
    length = end - start + 1 if handle.size else 0
    headers = _headers(d)
    status = 200
    if rng:
        status = 206
        headers["Content-Range"] = f"bytes {start}-{end}/{handle.size}"
    if request.method == "GET":
        reg.record_blob_pull(name, d, current_actor)
    if request.method == "HEAD" or length == 0:
        resp = current_app.response_class(b"", status=status)
        resp.headers.update(headers)
        resp.headers["Content-Length"] = str(length)
        return resp
    # A Range we chose to ignore (multi-range, malformed) is served whole here: the store
    # would interpret it its own way.
    if (rng or not request.headers.get("Range")) and redirect_allowed(reg.cfg.global_.enable_blob_redirect):
        # S3: the client fetches the bytes (and its Range) from the store directly.
        url = reg.blobs.redirect_url(d)
        if url:
            return redirect(url, {"Docker-Content-Digest": str(d)})
    fh = reg.blobs.open(name, d, start)
    if "gunicorn.socket" in request.environ:
        # gunicorn's file wrapper (sent with sendfile by angos.server) honours Content-Length.
        body = request.environ["wsgi.file_wrapper"](fh, CHUNK)
    else:
        body = _limited(fh, length)
    resp = current_app.response_class(body, status=status, direct_passthrough=True)
    resp.headers.update(headers)
    resp.headers["Content-Length"] = str(length)
    return resp


def _headers(d: Digest) -> dict:
    return {
        "Docker-Content-Digest": str(d),
        "Content-Type": "application/octet-stream",
        "Accept-Ranges": "bytes",
        "ETag": f'"{d}"',
        "Cache-Control": "max-age=31536000",
    }


def _from_upstream(cache, name: str, d: Digest, served):
    """A blob not stored yet: a HEAD answered from the upstream's size, or a GET that streams the
    fill as it lands (the fill verifies the digest before anything is visible)."""
    headers = _headers(d)
    size = served.size or 0
    rng = _parse_range(request.headers.get("Range"), size) if served.fill is not None else None
    start, end = rng if rng else (0, size - 1)
    length = end - start + 1 if size else 0
    status = 206 if rng else 200
    if rng:
        headers["Content-Range"] = f"bytes {start}-{end}/{size}"
    if served.fill is None or length == 0:
        resp = current_app.response_class(b"", status=status)
    else:
        resp = current_app.response_class(_stream(cache, name, d, served.fill, start, length), status=status,
                                          direct_passthrough=True)
    resp.headers.update(headers)
    resp.headers["Content-Length"] = str(length)
    return resp


def _stream(cache, name: str, d: Digest, fill, start: int, length: int):
    try:
        yield from fill.read(cache.registry.blob_store, start, length)
    except OciError as exc:
        # Headers are gone: the only way left to say "failed" is to cut the response short. An
        # ECONNRESET makes gunicorn close the connection without a traceback; this line says why.
        log.warning("pull-through GET %s@%s cut short: %s", name, d, exc.message)
        raise ConnectionResetError(errno.ECONNRESET, exc.message) from None
    cache.blobs.finish(name, d)


@bp.route("/v2/<path:name>/blobs/<digest>", methods=["DELETE"])
@action("delete-blob")
def delete_blob(name: str, digest: str):
    validate_name(name)
    d = Digest.parse(digest)
    registry().blobs.delete(name, d)
    return empty(202, {"Docker-Content-Digest": str(d)})
