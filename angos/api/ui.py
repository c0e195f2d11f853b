"""The web UI (``[ui] enabled = true``): browse what is stored, and the jobs admin pages.

Server-rendered HTML and plain forms, so it works in any browser (no
JavaScript) and behind the same access policy as the ``/_ext/_jobs`` API:
each page and button is one of that API's actions, with ``request.queue``.

- ``GET /_ui/`` (``list-repositories``), ``GET /_ui/repositories/<repository>``
  (``list-namespaces``), ``GET /_ui/namespaces/<namespace>`` (``list-revisions``):
  repositories → namespaces → manifests with tags, parent index, push and pull
  times (the ``/_ext/`` listings, rendered);
- ``GET /_ui/jobs?queue=replication|cache[&after=]`` (``list-jobs``): pending
  and running jobs, oldest first, 100 a page;
- ``GET /_ui/jobs/failed?queue=...`` (``list-failed-jobs``): dead letters
  with their last error;
- ``POST /_ui/jobs/failed/<key>/retry`` (``retry-job``),
  ``POST /_ui/jobs/failed/<key>/delete`` and ``POST /_ui/jobs/pending/<key>/delete``
  (``delete-job``): act, then 303 back to the list, which says what happened;
- ``GET /_ui/replication`` and ``GET /_ui/replication/<namespace>``
  (``get-replication-status``): every downstream's state (the rows of
  :func:`~angos.replication.status.downstream_overview`, each key a column),
  and a namespace's tags × downstreams status table (100 tags a page), linked
  from the namespace's manifests page; both refresh themselves every
  :data:`REFRESH_SECS`;
- ``GET /_ui/config`` (``ui-config``): ``{"name": ...}``;
  ``GET /_ui/assets/<file>`` (``ui-asset``): the stylesheet.

A browser sends stored Basic credentials with any request to this host,
including a form another site submits: :mod:`angos.api.origin` refuses a POST
that says it comes from another site, or that carries neither
``Sec-Fetch-Site`` nor ``Origin``, with 403 before it acts.
"""

from __future__ import annotations

import os
from datetime import datetime, timezone

from flask import Blueprint, current_app, redirect, render_template, request, send_from_directory, url_for

from ..oci.errors import Conflict
from ..oci.reference import validate_name
from ..queue import QUEUES, STORAGE_KEY
from ..replication.status import StatusReader, downstream_names
from .gate import action
from .http import json_response, paginate, registry
from .replication_status import overview_rows
from . import jobs
from .jobs import JobUnknown, requested_page, requested_queue

FILES = os.path.join(os.path.dirname(__file__), "ui_files")
PAGE = 100
REFRESH_SECS = 5

bp = Blueprint("ui", __name__, url_prefix="/_ui", template_folder="ui_files")


# What a redirect back may announce: fixed texts, so a crafted link cannot put words on the page.
NOTICES = {
    "retried": "Job {key} is pending again.",
    "deleted": "Job {key} deleted.",
    "running": "Job {key} is running; it cannot be deleted until it finishes.",
}


def _notice() -> str | None:
    text, key = NOTICES.get(request.args.get("done", "")), request.args.get("key", "")
    return text.format(key=key) if text is not None and STORAGE_KEY.fullmatch(key) else None


def _name() -> str:
    return current_app.extensions["angos.config"].ui.name


@bp.app_template_filter("when")
def _when(unix: int | None) -> str:
    if unix is None:
        return ""
    return datetime.fromtimestamp(unix, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


@bp.route("/", methods=["GET"])
@action("list-repositories")
def browse_repositories():
    return render_template("browse.html", name=_name(), view="repositories", title="Repositories",
                           rows=registry().inventory.repositories())


@bp.route("/repositories/<path:repository>", methods=["GET"])
@action("list-namespaces")
def browse_namespaces(repository: str):
    validate_name(repository)
    return render_template("browse.html", name=_name(), view="namespaces", title=f"Namespaces of {repository}",
                           repository=repository, rows=registry().inventory.namespaces(repository))


@bp.route("/namespaces/<path:namespace>", methods=["GET"])
@action("list-revisions")
def browse_revisions(namespace: str):
    validate_name(namespace)
    return render_template("browse.html", name=_name(), view="revisions", title=f"Manifests of {namespace}",
                           namespace=namespace, rows=registry().inventory.revisions(namespace),
                           replicated=bool(downstream_names(current_app.extensions["angos.config"], namespace)))


@bp.app_template_filter("cell")
def _cell(value) -> str:
    """A generic overview cell: lists joined, nothing for None."""
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value)
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


@bp.route("/replication", methods=["GET"])
@action("get-replication-status")
def replication_overview():
    return render_template("replication.html", name=_name(), view="overview", title="Replication",
                           refresh=REFRESH_SECS, rows=overview_rows())


@bp.route("/replication/<path:namespace>", methods=["GET"])
@action("get-replication-status")
def replication_namespace(namespace: str):
    validate_name(namespace)
    cfg = current_app.extensions["angos.config"]
    names = downstream_names(cfg, namespace)
    reader = StatusReader(registry())
    last = request.args.get("last") or None
    page, _ = paginate(reader.tag_names(namespace), PAGE + 1, last, "")
    more = len(page) > PAGE
    tags = reader.tags_of(namespace, page[:PAGE], names)
    return render_template("replication.html", name=_name(), view="namespace", title=f"Replication of {namespace}",
                           refresh=REFRESH_SECS, namespace=namespace, downstreams=names, tags=tags,
                           next=page[PAGE - 1] if more else None)


def _render(failed: bool):
    status = 404
    q = requested_queue(status)
    _, after = requested_page(status)
    rows, nxt = (q.list_failed if failed else q.list_pending)(after, PAGE)
    return render_template("jobs.html", name=_name(), queues=QUEUES, queue=q.name, failed=failed, jobs=rows,
                           next=nxt, notice=_notice())


@bp.route("/jobs", methods=["GET"])
@action("list-jobs")
def pending_jobs():
    return _render(failed=False)


@bp.route("/jobs/failed", methods=["GET"])
@action("list-failed-jobs")
def failed_jobs():
    return _render(failed=True)


def _back(endpoint: str, queue: str, done: str, key: str):
    return redirect(url_for(endpoint, queue=queue, done=done, key=key), code=303)


@bp.route("/jobs/failed/<key>/retry", methods=["POST"])
@action("retry-job")
def retry_failed(key):
    q = requested_queue(400)
    jobs.retry(q, key)
    return _back("ui.failed_jobs", q.name, "retried", key)


@bp.route("/jobs/failed/<key>/delete", methods=["POST"])
@action("delete-job")
def delete_failed(key):
    q = requested_queue(400)
    jobs.remove_failed(q, key)
    return _back("ui.failed_jobs", q.name, "deleted", key)


@bp.route("/jobs/pending/<key>/delete", methods=["POST"])
@action("delete-job")
def delete_pending(key):
    q = requested_queue(400)
    try:
        jobs.remove_pending(q, key)
    except Conflict:  # running: say so on the page rather than answer an error document
        return _back("ui.pending_jobs", q.name, "running", key)
    return _back("ui.pending_jobs", q.name, "deleted", key)


@bp.route("/config", methods=["GET"])
@action("ui-config")
def config():
    return json_response({"name": _name()})


@bp.route("/assets/<filename>", methods=["GET"])
@action("ui-asset")
def asset(filename):
    if filename != "ui.css":
        raise JobUnknown("no such asset")
    return send_from_directory(FILES, filename, max_age=3600)
