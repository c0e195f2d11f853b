"""Browsing what is stored: ``GET /_ui/`` (``list-repositories``), ``GET /_ui/repositories/<repository>``
(``list-namespaces``), ``GET /_ui/namespaces/<namespace>`` (``list-revisions``): repositories →
namespaces → manifests with tags, parent index, push and pull times (the ``/_ext/`` listings,
rendered)."""

from __future__ import annotations

from flask import current_app, url_for

from ...oci.reference import validate_name
from ...replication.status import downstream_names
from ..gate import action
from ..http import registry
from . import bp
from .common import home_crumb, page


@bp.route("/", methods=["GET"])
@action("list-repositories")
def browse_repositories():
    return page("browse.html", "Repositories", section="repositories", view="repositories",
                rows=registry().inventory.repositories())


@bp.route("/repositories/<path:repository>", methods=["GET"])
@action("list-namespaces")
def browse_namespaces(repository: str):
    validate_name(repository)
    return page("browse.html", f"Namespaces of {repository}", [home_crumb(), (repository, None)],
                section="repositories", view="namespaces", repository=repository,
                rows=registry().inventory.namespaces(repository))


@bp.route("/namespaces/<path:namespace>", methods=["GET"])
@action("list-revisions")
def browse_revisions(namespace: str):
    validate_name(namespace)
    cfg = current_app.extensions["angos.config"]
    crumbs = [home_crumb()]
    repository = cfg.repository_for(namespace)[0]
    if repository is not None:
        crumbs.append((repository, url_for("ui.browse_namespaces", repository=repository)))
    crumbs.append((namespace, None))
    return page("browse.html", f"Manifests of {namespace}", crumbs, section="repositories", view="revisions",
                namespace=namespace, rows=registry().inventory.revisions(namespace),
                replicated=bool(downstream_names(cfg, namespace)))
