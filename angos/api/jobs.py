"""``/_ext/_jobs``: list, retry and delete jobs of the durable queues (SPEC 10).

Routes (``?queue=cache|replication|webhooks``, default ``cache``; ``n`` 1-1000, default
100; ``after`` = the ``next`` cursor of the previous page):

- ``GET /_ext/_jobs`` → ``{"jobs": [...], "next": ...}``: pending and running
  jobs (``state`` says which), oldest first;
- ``GET /_ext/_jobs/failed`` → ``{"failed": [...], "next": ...}``;
- ``POST /_ext/_jobs/failed/<key>/retry`` → 204: back to pending, attempts 0;
- ``DELETE /_ext/_jobs/failed/<key>``, ``DELETE /_ext/_jobs/pending/<key>`` → 204.

``next`` appears only when another page follows. An unknown queue or a
malformed parameter answers 404 on listings and 400 on mutations; a key that
is not there answers 404; deleting a job that is running answers 409. Each
route has its own policy action (list-jobs, list-failed-jobs, retry-job,
delete-job) and the policy sees ``request.queue``.

Registering the blueprint also opens both queues for this app
(``app.extensions["angos.queues"]``, a :class:`angos.queue.JobQueues` that
producers enqueue through) and, with ``[global.job_queue]``, starts the
queue-depth gauge refresher. When ``angos server`` runs with a process-local
(``memory``) metadata lock it sets ``ANGOS_DRAIN_IN_WORKER`` and its one web
worker hosts the drain itself (:func:`angos.queue.consumer.start_in_worker`).
"""

from __future__ import annotations

import logging
import os

from flask import Blueprint, current_app, request

from ..digits import count
from ..oci.errors import Conflict, OciError, Unsupported
from ..queue import QUEUES, STORAGE_KEY, JobQueues
from ..native import under_gevent
from .gate import action
from .http import empty, json_response

log = logging.getLogger("angos.api.jobs")
bp = Blueprint("jobs", __name__, url_prefix="/_ext/_jobs")

MAX_PAGE = 1000


class JobUnknown(OciError):
    code = "NOT_FOUND"
    status = 404
    default_message = "no such job"


@bp.record_once
def _setup(state) -> None:
    app = state.app
    cfg = app.extensions["angos.config"]
    queues = app.extensions.setdefault("angos.queues", JobQueues(cfg))
    for name in QUEUES:
        try:
            queues[name]  # open now, at worker boot, so no request pays for creating the store
        except Exception:  # noqa: BLE001 - the queue may come up later (e.g. Redis restarting)
            log.exception("cannot open job queue %s yet", name)
    hosted = os.environ.get("ANGOS_DRAIN_IN_WORKER")
    if hosted is not None and cfg.global_.job_queue is None and under_gevent():
        # Set by `angos server` when the metadata lock is process-local: this worker drains.
        from ..queue.consumer import start_in_worker

        cache = app.extensions.get("angos.cache")
        if cache is not None:
            # Background fills must take the same process-local fill locks as this worker's requests.
            queues["cache"].context.provide("cache", cache)
        start_in_worker(cfg, queues, [m for m in hosted.split(",") if m])
    jq = cfg.global_.job_queue
    if jq is not None:
        from ..queue.gauges import start_refresher

        start_refresher(lambda: [queues[name].refresh_gauges() for name in QUEUES],
                        jq.pending_refresh_interval_secs)


def requested_queue(status: int):
    """The ``?queue=`` of this request (default ``cache``); an unknown one is ``status`` (404 on
    listings, 400 on mutations). Shared with the UI pages."""
    name = request.args.get("queue", "cache")
    if name not in QUEUES:
        raise Unsupported(f"unknown queue {name!r}; valid: {', '.join(QUEUES)}", status=status)
    return current_app.extensions["angos.queues"][name]


def requested_page(status: int) -> tuple[int, str | None]:
    """``(n, after)`` of this request, validated."""
    raw_n = request.args.get("n", "100")
    if not count(raw_n):
        raise Unsupported(f"n must be a positive integer, got {raw_n[:32]!r}", status=status)
    after = request.args.get("after") or None
    if after is not None and not STORAGE_KEY.fullmatch(after):
        raise Unsupported(f"after must be a storage_key from a previous page, got {after!r}", status=status)
    return min(int(raw_n), MAX_PAGE), after


def _listing(field: str, jobs: list, nxt: str | None):
    body = {field: jobs}
    if nxt is not None:
        body["next"] = nxt
    return json_response(body)


def checked_key(key: str) -> str:
    """``key`` if it has the shape of a storage_key, else 404 (so it never reaches a store)."""
    if not STORAGE_KEY.fullmatch(key):
        raise JobUnknown(f"no job with storage_key {key!r}")
    return key


@bp.route("", methods=["GET"])
@action("list-jobs")
def list_jobs():
    q = requested_queue(404)
    n, after = requested_page(404)
    jobs, nxt = q.list_pending(after, n)
    return _listing("jobs", jobs, nxt)


@bp.route("/failed", methods=["GET"])
@action("list-failed-jobs")
def list_failed_jobs():
    q = requested_queue(404)
    n, after = requested_page(404)
    jobs, nxt = q.list_failed(after, n)
    return _listing("failed", jobs, nxt)


def retry(q, key: str) -> None:
    """Make failed job ``key`` pending again (attempts reset); 404 if there is none."""
    if not q.retry_failed(checked_key(key)):
        raise JobUnknown(f"no failed job with storage_key {key!r}")


def remove_failed(q, key: str) -> None:
    if not q.delete_failed(checked_key(key)):
        raise JobUnknown(f"no failed job with storage_key {key!r}")


def remove_pending(q, key: str) -> None:
    """Delete pending job ``key``: 409 CONFLICT while it runs, 404 if there is none."""
    if q.delete_pending(checked_key(key)):
        return
    found = q.get(key)
    if found is not None and found[1] == "running":
        raise Conflict(f"job {key} is running; it cannot be deleted until it finishes")
    raise JobUnknown(f"no pending job with storage_key {key!r}")


@bp.route("/failed/<key>/retry", methods=["POST"])
@action("retry-job")
def retry_job(key):
    retry(requested_queue(400), key)
    return empty(204)


@bp.route("/failed/<key>", methods=["DELETE"])
@action("delete-job")
def delete_failed_job(key):
    remove_failed(requested_queue(400), key)
    return empty(204)


@bp.route("/pending/<key>", methods=["DELETE"])
@action("delete-job")
def delete_pending_job(key):
    remove_pending(requested_queue(400), key)
    return empty(204)
