"""``/_ext/`` listings beyond the OCI API (SPEC 12): repositories, namespaces, revisions, uploads.

- ``GET /_ext/_repositories`` (``list-repositories``) →
  ``{"repositories": [{name, namespaces, is_pull_through, immutable_tags}]}``;
- ``GET /_ext/<repository>/_namespaces`` (``list-namespaces``) →
  ``{"namespaces": [{name, manifests, uploads}]}``, 404 ``NAME_UNKNOWN`` for a
  repository that is not configured;
- ``GET /_ext/<namespace>/_revisions`` (``list-revisions``) →
  ``{"revisions": [{digest, media_type, tags, parent, pushed_at, last_pulled_at}]}``;
- ``GET /_ext/<namespace>/_uploads`` (``list-uploads``) →
  ``{"uploads": [{uuid, size, started_at}]}``;
- ``GET /_ext/<namespace>/_tags`` (``list-tags``, ``n``/``last`` paging with
  ``Link``) → ``{"name", "tags": [{name, digest, created_at} | {name,
  deleted_at}]}``: every tag's state for last-writer-wins, tombstones
  included, in RFC 3339 author times (what ``angos replicate`` compares
  between Angos peers). An unknown namespace lists nothing. With ``name``
  (repeatable, at most :data:`MAX_NAMES`) it lists just those tags' states,
  in the order asked, leaving out names with none (what reconcile asks
  about the tags a change feed names), without paging.

The policy sees ``request.namespace`` (the repository key on ``list-namespaces``).
Names are validated like OCI names, so ``..`` and friends are ``NAME_INVALID``.
Times are Unix seconds. See :mod:`angos.registry.inventory`.
"""

from __future__ import annotations

from flask import Blueprint, request

from ..oci.errors import Unsupported
from ..oci.reference import validate_name
from .gate import action
from .http import json_response, paginate, pagination, registry

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


MAX_NAMES = 100


@bp.route("/<path:namespace>/_tags", methods=["GET"])
@action("list-tags")
def tag_states(namespace: str):
    validate_name(namespace)
    names = request.args.getlist("name")
    if names:
        if len(names) > MAX_NAMES:
            raise Unsupported(f"at most {MAX_NAMES} name parameters per request, got {len(names)}")
        return json_response({"name": namespace, "tags": registry().inventory.tag_states_of(namespace, names)})
    n, last = pagination()
    states = registry().inventory.tag_states(namespace)
    names, link = paginate(sorted(states), n, last, f"/_ext/{namespace}/_tags")
    return json_response({"name": namespace, "tags": [states[t] for t in names]},
                         headers={"Link": link} if link else None)
