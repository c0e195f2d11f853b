"""Job administration pages, each one of the jobs API's actions with ``request.queue``:

- ``GET /_ui/jobs?queue=<queue>[&after=]`` (``list-jobs``): pending and running jobs,
  oldest first, :data:`PAGE` a page;
- ``GET /_ui/jobs/failed?queue=...`` (``list-failed-jobs``): dead letters with their last error;
- ``POST /_ui/jobs/failed/<key>/retry`` (``retry-job``), ``POST /_ui/jobs/failed/<key>/delete``
  and ``POST /_ui/jobs/pending/<key>/delete`` (``delete-job``): act, then 303 back to the
  list, which says what happened (:data:`NOTICES`).
"""

from __future__ import annotations

from flask import redirect, request, url_for

from ...oci.errors import Conflict
from ...queue import QUEUES, STORAGE_KEY
from .. import jobs
from ..gate import action
from ..jobs import requested_page, requested_queue
from . import bp
from .common import page

PAGE = 100

# What a redirect back may announce: fixed texts, so a crafted link cannot put words on the page.
NOTICES = {
    "retried": "Job {key} is pending again.",
    "deleted": "Job {key} deleted.",
    "running": "Job {key} is running; it cannot be deleted until it finishes.",
}


def _notice() -> str | None:
    text, key = NOTICES.get(request.args.get("done", "")), request.args.get("key", "")
    return text.format(key=key) if text is not None and STORAGE_KEY.fullmatch(key) else None


def _render(failed: bool):
    status = 404
    q = requested_queue(status)
    _, after = requested_page(status)
    rows, nxt = (q.list_failed if failed else q.list_pending)(after, PAGE)
    title = f"{'Failed' if failed else 'Pending and running'} jobs: {q.name}"
    return page("jobs.html", title, section="jobs", queues=QUEUES, queue=q.name, failed=failed, jobs=rows,
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
