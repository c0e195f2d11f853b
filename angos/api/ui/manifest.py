"""The manifest page: ``GET /_ui/namespaces/<namespace>/manifests/<digest>`` (``get-manifest``).

Sections (ids are the page contract): ``#manifest`` (digest, media type, tags, size,
annotations; an index's children), ``#config`` (digest, size, platform, created,
entrypoint/cmd, environment variable NAMES only, labels), ``#layers`` (with a total row),
``#referenced-by`` (indexes listing it, with the platform they give it), ``#referrers``
(with artifact types), ``#files`` (an artifact's layers by title annotation), ``#replication``
(this digest's tags per downstream, from :class:`~angos.replication.status.StatusReader`) and
``#cache`` (a pull-through namespace's upstreams and what is cached here). The data come from
:class:`~angos.registry.image_views.ImageViews`; nothing is fetched from an upstream and no
pull is recorded: looking is not pulling.

A tag in place of the digest answers 303 to the digest's page (a tag moves, the page does not).
"""

from __future__ import annotations

import json

from flask import current_app, redirect, request, url_for

from ...oci.digest import is_digest
from ...oci.errors import ManifestUnknown
from ...oci.reference import validate_name, validate_tag
from ...registry.image_views import ImageViews
from ...registry.tags import immutable
from ...replication.status import StatusReader, downstream_names
from ..gate import action, can
from ..http import registry
from ..pull_through import cache_for
from . import bp
from .browse import namespace_crumbs, shown_url
from .common import page

# Tag records the page reads to find this digest's tags (the delete confirmation reads them all).
TAG_SCAN = 1000


@bp.app_template_filter("argv")
def argv(words: list[str]) -> str:
    """An entrypoint or command as the JSON array it is in the config (escaped by the template, not
    by ``tojson``, so a reader sees ``<`` rather than ``\\u003c``)."""
    return json.dumps(words, ensure_ascii=False)


def _replication(namespace: str, tags: list[str]) -> dict | None:
    names = downstream_names(current_app.extensions["angos.config"], namespace)
    if not names or not can("get-replication-status", namespace=namespace):
        return None
    return {"downstreams": names, "tags": StatusReader(registry()).tags_of(namespace, tags, names) if tags else []}


def _cache(namespace: str, doc: dict) -> dict | None:
    cache = cache_for(namespace)
    found = cache.repository(namespace) if cache is not None else None
    if found is None:
        return None
    key, repo = found
    policy = registry().write_policy(namespace)
    layers = doc["layers"]
    children = doc["children"]
    return {"repository": key, "upstreams": [shown_url(up.url) for up in repo.upstream],
            "immutable_tags": [t for t in doc["tags"] if immutable(t, policy.immutable_tags,
                                                                   policy.immutable_exclusions)],
            "layers_cached": sum(1 for b in layers if b["stored"]), "layers": len(layers),
            "children_cached": sum(1 for c in children if c["stored"]), "children": len(children)}


@bp.route("/namespaces/<path:namespace>/manifests/<reference>", methods=["GET"])
@action("get-manifest")
def manifest_page(namespace: str, reference: str):
    validate_name(namespace)
    reg = registry()
    if not is_digest(reference):
        validate_tag(reference)
        d = reg.manifests.resolve(namespace, reference)  # MANIFEST_UNKNOWN when no such tag
        return redirect(url_for("ui.manifest_page", namespace=namespace, reference=str(d)), code=303)
    doc = ImageViews(reg).details(namespace, reference, TAG_SCAN)
    if doc is None:
        raise ManifestUnknown(f"manifest {namespace}@{reference} unknown")
    policy = reg.write_policy(namespace)
    may_delete = can("delete-manifest", namespace=namespace, reference=reference, digest=reference)
    immutable_tags = [t for t in doc["tags"] if immutable(t, policy.immutable_tags, policy.immutable_exclusions)]
    crumbs = namespace_crumbs(namespace, here=False) + [(reference, None)]
    kind = {"index": "Index", "image": "Image", "artifact": "Artifact"}.get(doc["kind"], "Manifest")
    return page("manifest.html", f"{kind} {doc['digest'].split(':', 1)[-1][:12]}", crumbs,
                section="repositories", namespace=namespace, doc=doc,
                may_delete=may_delete and not immutable_tags, immutable_tags=immutable_tags,
                may_delete_tag={t: t not in immutable_tags and can("delete-manifest", namespace=namespace, reference=t)
                                for t in doc["tags"]},
                replication=_replication(namespace, doc["tags"]), cache=_cache(namespace, doc),
                pulls_recorded=reg.cfg.global_.update_pull_time, tag_scan=TAG_SCAN,
                base=url_for("ui.browse_revisions", namespace=namespace),
                pull=f"{request.host}/{namespace}@{doc['digest']}")
