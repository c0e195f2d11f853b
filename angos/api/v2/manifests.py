"""Manifests: HEAD/GET/PUT/DELETE by tag or digest, ``?tag=`` on by-digest PUTs
(``OCI-Tag``), ``OCI-Subject`` for manifests with a subject, and the
``X-Angos-Source-Timestamp`` header that marks a replicated write (with
``X-Angos-Source-Instance`` naming the instance it was authored on). On an S3
metadata store a GET answers 307 to a presigned URL of the bare body (with the
manifest's media type) when ``global.enable_manifest_redirect`` is on and the
client did not send ``X-Angos-No-Redirect``. In a pull-through namespace reads go
through :mod:`angos.cache.manifests` (a stale copy carries a ``Warning`` header)."""

from __future__ import annotations

import dataclasses

from flask import Blueprint, current_app, request

from ...config import INSTANCE_NAME
from ...oci.digest import is_digest
from ...oci.errors import ManifestInvalid, TooLarge, Unsupported
from ...oci.reference import validate_name, validate_tag
from ...registry.timestamps import parse_source_ts
from ..actors import current_actor
from ..gate import action, allows_fill, granted
from ..http import empty, read_bounded, redirect, redirect_allowed, registry
from ..pull_through import cache_for, stale_warning

bp = Blueprint("v2_manifests", __name__)

SOURCE_TS = "X-Angos-Source-Timestamp"
SOURCE_INSTANCE = "X-Angos-Source-Instance"


def _reference(reference: str) -> str:
    if not is_digest(reference):
        validate_tag(reference)
    return reference


class ManifestTooLarge(TooLarge):
    code = "MANIFEST_INVALID"


def _source_ts():
    """A replicated write's author time; a malformed one is refused, never read as a client write."""
    try:
        return parse_source_ts(request.headers.get(SOURCE_TS))
    except ValueError as exc:
        raise Unsupported(str(exc)) from None


def _source_instance(source_ts) -> str | None:
    """Where a replicated write was authored (None when not said). Read only with a source timestamp:
    a client write's origin is this instance. A malformed name is refused like a malformed time."""
    value = request.headers.get(SOURCE_INSTANCE)
    if source_ts is None or value is None or not value.strip():
        return None
    if not INSTANCE_NAME.fullmatch(value.strip()):
        raise Unsupported(f"{SOURCE_INSTANCE} {value[:64]!r} is not an instance name")
    return value.strip()


@bp.route("/v2/<path:name>/manifests/<reference>", methods=["GET", "HEAD"])
@action("get-manifest")
def get_manifest(name: str, reference: str):
    validate_name(name)
    reg = registry()
    cache = cache_for(name)
    warning = None
    if cache is not None:  # pull-through: hit, revalidate or fetch (angos.cache.manifests)
        served = cache.get_manifest(name, _reference(reference), allows_fill)
        rev = served.revision
        warning = stale_warning(served.warning) if served.warning else None
    else:
        rev = reg.manifests.get(name, _reference(reference))
    if request.method == "GET":
        reg.record_pull(name, rev.digest, reference, current_actor)
        if redirect_allowed(reg.cfg.global_.enable_manifest_redirect):
            url = reg.manifests.redirect_url(name, rev)  # served with rev.media_type as Content-Type
            if url:
                resp = redirect(url, {"Docker-Content-Digest": str(rev.digest)})
                if warning:
                    resp.headers["Warning"] = warning
                return resp
    resp = current_app.response_class(b"" if request.method == "HEAD" else rev.body, status=200)
    if warning:
        resp.headers["Warning"] = warning
    resp.headers["Content-Type"] = rev.media_type
    resp.headers["Docker-Content-Digest"] = str(rev.digest)
    resp.headers["Content-Length"] = str(len(rev.body))
    resp.headers["ETag"] = f'"{rev.digest}"'
    return resp


@bp.route("/v2/<path:name>/manifests/<reference>", methods=["PUT"])
@action("put-manifest")
def put_manifest(name: str, reference: str):
    validate_name(name)
    _reference(reference)
    reg = registry()
    body = read_bounded(reg.manifests.max_manifest_size, ManifestTooLarge)
    if not body:
        raise ManifestInvalid("empty manifest body")
    extra_tags = request.args.getlist("tag") if is_digest(reference) else []
    source_ts = _source_ts()
    policy = dataclasses.replace(reg.write_policy(name),
                                 may_repoint=lambda tag: granted("repoint-immutable-tag", namespace=name, reference=tag))
    result = reg.manifests.put(name, reference, body, request.headers.get("Content-Type"), policy, extra_tags,
                               source_ts, _source_instance(source_ts), current_actor())
    headers = {"Location": f"/v2/{name}/manifests/{result.digest}", "Docker-Content-Digest": str(result.digest)}
    resp = empty(201, headers)
    if result.subject:
        resp.headers["OCI-Subject"] = result.subject
    if extra_tags:
        resp.headers["OCI-Tag"] = ", ".join(result.tags)
    return resp


@bp.route("/v2/<path:name>/manifests/<reference>", methods=["DELETE"])
@action("delete-manifest")
def delete_manifest(name: str, reference: str):
    validate_name(name)
    source_ts = _source_ts()
    registry().manifests.delete(name, _reference(reference), source_ts, _source_instance(source_ts),
                                current_actor())
    return empty(202)
