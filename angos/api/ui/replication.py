"""Replication pages (``get-replication-status``): ``GET /_ui/replication`` shows every
downstream's state (the rows of :func:`~angos.replication.status.downstream_overview` with their
backlog, dead letters and conflicts); ``GET /_ui/replication/<namespace>`` a namespace's
tags × downstreams status table (:data:`PAGE` tags a page), linked from and back to the
namespace's page. Both refresh themselves every :data:`REFRESH_SECS`.

The overview shows the fields it knows as designed columns (:data:`OVERVIEW_COLUMNS`: times
relative, errors one line with the full text behind a ``<details>``, so the table fits 1280 px)
and any field the status rows gain later as a plain column after them, so nothing the API
reports is hidden here.
"""

from __future__ import annotations

from flask import current_app, request, url_for

from ...oci.reference import validate_name
from ...replication.status import StatusReader, downstream_names
from ..gate import action, can
from ..http import paginate, registry
from ..replication_status import overview_rows
from . import bp
from .common import page

PAGE = 100
REFRESH_SECS = 5
# The overview's own columns: every other key of a row is shown after them as it is.
OVERVIEW_COLUMNS = ("downstream", "url", "repositories", "state", "since", "last_success", "backlog",
                    "oldest_pending_secs", "dead_letters", "conflicts", "last_error", "last_error_at")


@bp.route("/replication", methods=["GET"])
@action("get-replication-status")
def replication_overview():
    rows = overview_rows()
    extra = [k for k in (rows[0] if rows else {}) if k not in OVERVIEW_COLUMNS]
    repos = {key for row in rows for key in row.get("repositories") or ()}
    repo_urls = {key: url_for("ui.browse_namespaces", repository=key) for key in sorted(repos)
                 if can("list-namespaces", namespace=key)}
    return page("replication.html", "Replication", section="replication", view="overview", refresh=REFRESH_SECS,
                rows=rows, extra=extra, repo_urls=repo_urls,
                failed_url=url_for("ui.failed_jobs", queue="replication")
                if can("list-failed-jobs", queue="replication") else None)


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
    ns_url = url_for("ui.browse_revisions", namespace=namespace) if can("list-revisions", namespace=namespace) \
        else None
    crumbs = [("Replication", url_for("ui.replication_overview")), (namespace, ns_url), ("status", None)]
    return page("replication.html", f"Replication of {namespace}", crumbs, section="replication",
                view="namespace", refresh=REFRESH_SECS, namespace=namespace, namespace_url=ns_url,
                downstreams=names, tags=tags, next=tag_page[PAGE - 1] if more else None)
