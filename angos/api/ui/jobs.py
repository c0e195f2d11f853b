"""Job administration pages, each one of the jobs API's actions with ``request.queue``:

- ``GET /_ui/jobs?queue=<queue>[&after=]`` (``list-jobs``): pending and running jobs,
  oldest first, :data:`PAGE` a page;
- ``GET /_ui/jobs/failed?queue=...`` (``list-failed-jobs``): dead letters with their last error;
- ``POST /_ui/jobs/failed/<key>/retry`` (``retry-job``), ``POST /_ui/jobs/failed/<key>/delete``
  and ``POST /_ui/jobs/pending/<key>/delete`` (``delete-job``): act, then 303 back to the
  list, which says what happened (:data:`NOTICES`).

The queue tabs carry each queue's pending and failed counts from the queues' cheap counters
(:meth:`~angos.queue.core.JobQueue.counts`, capped at :data:`~angos.queue.core.SATURATION`), never
from listing jobs. A row names what its job works on (:func:`target`, read from the payload the
replication, cache and webhook producers write) and links to that namespace's page when the
visitor may read it; its error is one line, the full text behind a ``<details>``. A Retry or
Delete button appears only when the policy would allow it.
"""

from __future__ import annotations

import logging
from urllib.parse import quote

from flask import current_app, redirect, request, url_for

from ...oci.errors import Conflict, OciError
from ...oci.reference import validate_name, validate_tag
from ...queue import QUEUES, STORAGE_KEY
from ...queue.core import SATURATION
from .. import jobs
from ..gate import action, can
from ..jobs import requested_page, requested_queue
from . import bp
from .common import page

log = logging.getLogger("angos.api.ui")

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


def _counts() -> dict[str, dict]:
    """``{queue: {"pending": text, "failed": text}}``; "?" where a queue's store does not answer,
    "10000+" at the counters' cap."""
    out = {}
    for name in QUEUES:
        try:
            pending, failed = current_app.extensions["angos.queues"][name].counts()
        except Exception:  # noqa: BLE001 - one unreachable backend must not take the page down
            log.warning("cannot count the jobs of queue %s", name, exc_info=True)
            out[name] = {"pending": "?", "failed": "?"}
            continue
        out[name] = {k: f"{v}+" if v >= SATURATION else str(v) for k, v in (("pending", pending),
                                                                             ("failed", failed))}
    return out


def _valid_name(value) -> str | None:
    if not isinstance(value, str):
        return None
    try:
        validate_name(value)
    except OciError:
        return None
    return value


def _valid_tag(value) -> str | None:
    if not isinstance(value, str) or ":" in value:
        return None
    try:
        validate_tag(value)
    except OciError:
        return None
    return value


def target(job: dict) -> dict:
    """What ``job`` works on, from its payload: ``namespace``, ``tag``, ``digest`` (``is_manifest``
    says whether it names a manifest), ``downstream``, ``webhook`` (each only when present and well
    formed). Replication jobs carry ``namespace``
    and ``reference`` (a tag or a digest) or ``subject``; cache fills ``namespace`` and a blob
    ``digest``; webhook deliveries the event document with its ``namespace``, ``tag``, ``digest``."""
    payload = job.get("payload")
    if not isinstance(payload, dict):
        return {}
    event = payload.get("event") if isinstance(payload.get("event"), dict) else {}
    ns = _valid_name(payload.get("namespace")) or _valid_name(event.get("namespace"))
    if ns is None:
        return {}
    ref = payload.get("reference") if isinstance(payload.get("reference"), str) else None
    out = {"namespace": ns}
    tag = _valid_tag(ref) or _valid_tag(event.get("tag"))
    if tag is not None:
        out["tag"] = tag
    manifest = next((d for d in (ref, payload.get("subject")) if isinstance(d, str) and ":" in d), None)
    digest = manifest or next((d for d in (payload.get("digest"), event.get("digest"))
                               if isinstance(d, str) and ":" in d), None)
    if digest is not None:
        out["digest"] = digest
        out["is_manifest"] = manifest is not None  # a cache fill's digest is a blob: no page of its own
    for key in ("downstream", "webhook"):
        if isinstance(payload.get(key), str):
            out[key] = payload[key]
    return out


def _with_targets(rows: list[dict]) -> list[dict]:
    """Each row with its ``target`` and whether the visitor may open its namespace's page."""
    readable: dict[str, bool] = {}
    for row in rows:
        t = row["target"] = target(row)
        ns = t.get("namespace")
        if ns is not None:
            if ns not in readable:
                readable[ns] = can("list-revisions", namespace=ns)
            if readable[ns]:
                t["url"] = url_for("ui.browse_revisions", namespace=ns)
                if t.get("is_manifest"):  # the manifest page's path, as the page contract names it
                    t["manifest_url"] = f"{t['url']}/manifests/{quote(t['digest'], safe=':')}"
    return rows


def _render(failed: bool):
    status = 404
    q = requested_queue(status)
    _, after = requested_page(status)
    rows, nxt = (q.list_failed if failed else q.list_pending)(after, PAGE)
    title = f"{'Failed' if failed else 'Pending and running'} jobs: {q.name}"
    may = {"retry": failed and can("retry-job", queue=q.name), "delete": can("delete-job", queue=q.name)}
    return page("jobs.html", title, [("Jobs", url_for("ui.pending_jobs", queue=q.name)), (title, None)],
                section="jobs", queues=QUEUES, queue=q.name, failed=failed, jobs=_with_targets(rows), next=nxt,
                notice=_notice(), counts=_counts(), may=may)


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
