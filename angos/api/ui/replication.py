"""Replication pages (``get-replication-status``): ``GET /_ui/replication`` shows every
downstream's state (the rows of :func:`~angos.replication.status.downstream_overview`, each key a
column); ``GET /_ui/replication/<namespace>`` a namespace's tags × downstreams status table
(:data:`PAGE` tags a page), linked from the namespace's page. Both refresh themselves every
:data:`REFRESH_SECS`."""

from __future__ import annotations

from flask import current_app, request, url_for

from ...oci.reference import validate_name
from ...replication.status import StatusReader, downstream_names
from ..gate import action
from ..http import paginate, registry
from ..replication_status import overview_rows
from . import bp
from .common import page

PAGE = 100
REFRESH_SECS = 5


@bp.route("/replication", methods=["GET"])
@action("get-replication-status")
def replication_overview():
    return page("replication.html", "Replication", section="replication", view="overview", refresh=REFRESH_SECS,
                rows=overview_rows())


@bp.route("/replication/<path:namespace>", methods=["GET"])
@action("get-replication-status")
def replication_namespace(namespace: str):
    validate_name(namespace)
    cfg = current_app.extensions["angos.config"]
    names = downstream_names(cfg, namespace)
    reader = StatusReader(registry())
    last = request.args.get("last") or None
    tag_page, _ = paginate(reader.tag_names(namespace), PAGE + 1, last, "")
    more = len(tag_page) > PAGE
    tags = reader.tags_of(namespace, tag_page[:PAGE], names)
    crumbs = [("Replication", url_for("ui.replication_overview")), (namespace, None)]
    return page("replication.html", f"Replication of {namespace}", crumbs, section="replication",
                view="namespace", refresh=REFRESH_SECS, namespace=namespace, downstreams=names, tags=tags,
                next=tag_page[PAGE - 1] if more else None)
