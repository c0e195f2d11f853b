"""Blob uploads: POST (session, monolithic ``?digest=``, ``?mount=&from=``),
PATCH (chunked with ``Content-Range`` or streamed), PUT (close with
``?digest=``), GET status and DELETE cancel."""

from __future__ import annotations

from flask import Blueprint, request

from ...oci.digest import Digest
from ...oci.errors import DigestInvalid, Unsupported
from ...oci.reference import validate_name
from ..actors import current_actor
from ..gate import action, can
from ..http import body_chunks, content_length, empty, has_body, parse_content_range, registry

bp = Blueprint("v2_uploads", __name__)


def _session_headers(name: str, upload_id: str, offset: int) -> dict:
    return {
        "Location": f"/v2/{name}/blobs/uploads/{upload_id}",
        "Range": f"0-{max(offset - 1, 0)}",
        "Docker-Upload-UUID": upload_id,
    }


def _created(name: str, d: Digest):
    return empty(201, {"Location": f"/v2/{name}/blobs/{d}", "Docker-Content-Digest": str(d)})


@bp.route("/v2/<path:name>/blobs/uploads/", methods=["POST"], strict_slashes=False)
@action("start-upload")
def start_upload(name: str):
    validate_name(name)
    reg = registry()
    mount = request.args.get("mount")
    if mount is not None:
        d = Digest.parse(mount)
        source = request.args.get("from") or None
        if source is not None:
            validate_name(source)
        if reg.blobs.mount(name, d, source, lambda ns: can("get-blob", namespace=ns, digest=str(d)), current_actor()):
            return _created(name, d)
        # Not mountable by this caller: fall back to an ordinary upload session (202).
    digest = request.args.get("digest")
    if digest is not None and mount is None:
        d = Digest.parse(digest)
        reg.uploads.monolithic(name, d, body_chunks(), content_length(), current_actor())
        return _created(name, d)
    algorithm = request.args.get("digest-algorithm", "sha256")
    upload_id = reg.uploads.start(name, algorithm)
    return empty(202, _session_headers(name, upload_id, 0))


@bp.route("/v2/<path:name>/blobs/uploads/<uuid>", methods=["GET"])
@action("get-upload")
def upload_status(name: str, uuid: str):
    validate_name(name)
    offset = registry().uploads.status(name, uuid)
    return empty(204, _session_headers(name, uuid, offset))


@bp.route("/v2/<path:name>/blobs/uploads/<uuid>", methods=["PATCH"])
@action("update-upload")
def upload_chunk(name: str, uuid: str):
    validate_name(name)
    rng = parse_content_range(request.headers.get("Content-Range"))
    offset = registry().uploads.append(name, uuid, body_chunks(), rng, content_length())
    return empty(202, _session_headers(name, uuid, offset))


@bp.route("/v2/<path:name>/blobs/uploads/<uuid>", methods=["PUT"])
@action("complete-upload")
def complete_upload(name: str, uuid: str):
    validate_name(name)
    digest = request.args.get("digest")
    if not digest:
        raise DigestInvalid("the digest query parameter is required to close an upload")
    d = Digest.parse(digest)
    rng = parse_content_range(request.headers.get("Content-Range"))
    chunks = body_chunks() if has_body() or rng is not None else None
    registry().uploads.complete(name, uuid, d, chunks, rng, content_length(), current_actor())
    return _created(name, d)


@bp.route("/v2/<path:name>/blobs/uploads/<uuid>", methods=["DELETE"])
@action("cancel-upload")
def cancel_upload(name: str, uuid: str):
    validate_name(name)
    registry().uploads.cancel(name, uuid)
    return empty(204)


@bp.route("/v2/<path:name>/blobs/uploads/<uuid>", methods=["POST"])
def upload_post_unsupported(name: str, uuid: str):
    raise Unsupported("POST is not defined on an upload session", status=405)
