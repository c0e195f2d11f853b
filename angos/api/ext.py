"""``/_ext/`` listings beyond the OCI API (SPEC 12): repositories, namespaces, revisions, uploads.

- ``GET /_ext/_repositories`` (``list-repositories``) →
  ``{"repositories": [{name, namespaces, is_pull_through, immutable_tags}]}``;
- ``GET /_ext/<repository>/_namespaces`` (``list-namespaces``) →
  ``{"namespaces": [{name, manifests, uploads}]}``, 404 ``NAME_UNKNOWN`` for a
  repository that is not configured;
- ``GET /_ext/<namespace>/_revisions`` (``list-revisions``) →
  ``{"revisions": [{digest, media_type, tags, parent, pushed_at, last_pulled_at}]}``;
- ``GET /_ext/<namespace>/_uploads`` (``list-uploads``) →
  ``{"uploads": [{uuid, size, started_at}]}``.

The policy sees ``request.namespace`` (the repository key on ``list-namespaces``).
Names are validated like OCI names, so ``..`` and friends are ``NAME_INVALID``.
Times are Unix seconds. See :mod:`angos.registry.inventory`.
"""

from __future__ import annotations

from flask import Blueprint

from ..oci.reference import validate_name
from .gate import action
from .http import json_response, registry

bp = Blueprint("ext", __name__, url_prefix="/_ext")


@bp.route("/_repositories", methods=["GET"])
@action("list-repositories")
def repositories():
    return json_response({"repositories": registry().inventory.repositories()})


@bp.route("/<path:repository>/_namespaces", methods=["GET"])
@action("list-namespaces")
def namespaces(repository: str):
    validate_name(repository)
    return json_response({"namespaces": registry().inventory.namespaces(repository)})


@bp.route("/<path:namespace>/_revisions", methods=["GET"])
@action("list-revisions")
def revisions(namespace: str):
    validate_name(namespace)
    return json_response({"revisions": registry().inventory.revisions(namespace)})


@bp.route("/<path:namespace>/_uploads", methods=["GET"])
@action("list-uploads")
def uploads(namespace: str):
    validate_name(namespace)
    return json_response({"uploads": registry().inventory.uploads(namespace)})
