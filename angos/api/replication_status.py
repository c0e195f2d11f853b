"""``/_ext/`` replication status: has a tag reached its downstreams yet (policy action
``get-replication-status``; states and records in :mod:`angos.replication.status`).

- ``GET /_ext/<namespace>/_replication/<tag>`` → ``{name, tag, digest, deleted,
  author_time, in_sync, downstreams: [{downstream, state, since, remote_digest,
  remote_deleted, remote_author_time, attempts, max_attempts, final, error,
  updated_at}]}``: the tag's current local state and every downstream's status
  of it (``404 MANIFEST_UNKNOWN`` for a tag this instance never had or has
  forgotten, ``NAME_UNKNOWN`` for an empty namespace);
- ``GET /_ext/<namespace>/_replication`` → ``{name, in_sync, tags: [...]}``, the
  same per tag (tombstones included), paged with ``n`` (default 100, at most
  1000) and ``last``, with a ``Link`` header like ``/_ext/<ns>/_tags``;
- ``GET /_ext/_replication/downstreams`` → ``{downstreams: [...]}``, one row per
  configured downstream (:func:`~angos.replication.status.downstream_overview`, with its backlog
  from the replication queue and its conflicts in the ``conflict_protection`` window).

Downstreams are those the namespace replicates to (filter matching, any
mode); ``&downstream=<name>`` narrows the answer to one (``400 UNSUPPORTED``
if that one does not replicate the namespace).

The answer is ``200`` when every listed downstream is ``in_sync`` with the
tag's *current* local state (a delete included) and ``202`` otherwise, with
or without ``wait``. ``?wait=<duration>`` (``30s``, ``2m``; plain numbers are
seconds; cut to ``[global.replication] max_status_wait_secs``) holds the
answer until that is so, or until waiting can change nothing more (what is
not in sync is ``unsupported``, or ``failed`` and dead-lettered), or until
the time is up, then answers the state it has. The request waits on a
wake-up from the job handler (:mod:`angos.replication.notify`), re-reading
the records only when one arrives or every
:data:`~angos.replication.notify.RECHECK_SECS`; under gevent it costs a
greenlet, not a worker. A stopping server answers its waiters at once.
Times are RFC 3339 (author times exactly as stored).
"""

from __future__ import annotations

import re
import time
from datetime import timedelta

from flask import Blueprint, current_app, request

from ..config import parse_duration
from ..oci.errors import Unsupported
from ..oci.reference import validate_name, validate_tag
from ..replication.notify import RECHECK_SECS, Waiters
from ..registry.timestamps import now
from ..replication.backlog import downstream_backlog
from ..replication.status import StatusReader, downstream_names, downstream_overview, may_change
from .gate import action
from .http import json_response, paginate, pagination, registry

bp = Blueprint("replication_status", __name__, url_prefix="/_ext")

DEFAULT_PAGE = 100
MAX_PAGE = 1000


@bp.record_once
def _setup(state) -> None:
    # One hub per worker process; its listener starts with the first waiter.
    state.app.extensions.setdefault("angos.status_waiters", Waiters(state.app.extensions["angos.config"]))


def _config():
    return current_app.extensions["angos.config"]


def requested_wait() -> float:
    raw = request.args.get("wait", "")
    if not raw:
        return 0.0
    try:
        if len(raw) > 32:
            raise ValueError(raw)
        secs = float(raw) if re.fullmatch(r"[0-9]+(\.[0-9]+)?", raw) else parse_duration(raw)
    except ValueError:
        raise Unsupported(f"wait must be a duration such as 30s or 2m, got {raw[:40]!r}") from None
    return min(secs, float(_config().global_.replication.max_status_wait_secs))


def _hold(build, views, ns: str, tag: str | None, wait: float) -> dict:
    """``build()`` now, or once waiting can change nothing more (no view of ``views(doc)`` may
    change, see :func:`~angos.replication.status.may_change`) within ``wait`` seconds."""
    if wait <= 0:
        return build()
    deadline = time.monotonic() + wait
    with current_app.extensions["angos.status_waiters"].subscribe(ns, tag) as sub:
        doc = build()  # read after subscribing: a change from here on wakes us
        while may_change(views(doc)) and not sub.released:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            sub.wait(min(RECHECK_SECS, left))
            doc = build()
    return doc


def _answer(doc: dict, headers: dict | None = None):
    out = dict(headers or {})
    out["Cache-Control"] = "no-store"
    return json_response(doc, status=200 if doc["in_sync"] else 202, headers=out)


@bp.route("/<path:namespace>/_replication/<reference>", methods=["GET"])
@action("get-replication-status")
def tag_status(namespace: str, reference: str):
    validate_name(namespace)
    validate_tag(reference)
    names = downstream_names(_config(), namespace, request.args.get("downstream") or None)
    wait = requested_wait()
    reader = StatusReader(registry())
    doc = _hold(lambda: reader.tag(namespace, reference, names), lambda d: d["downstreams"], namespace, reference,
                wait)
    return _answer(doc)


@bp.route("/<path:namespace>/_replication", methods=["GET"])
@action("get-replication-status")
def namespace_status(namespace: str):
    validate_name(namespace)
    only = request.args.get("downstream") or None
    names = downstream_names(_config(), namespace, only)
    n, last = pagination()
    n = DEFAULT_PAGE if n is None else min(n, MAX_PAGE)
    wait = requested_wait()
    reader = StatusReader(registry())
    page, link = paginate(reader.tag_names(namespace), n, last, f"/_ext/{namespace}/_replication",
                          {"downstream": only} if only else None)

    def build() -> dict:
        tags = reader.tags_of(namespace, page, names)
        return {"name": namespace, "in_sync": all(t["in_sync"] for t in tags), "tags": tags}

    doc = _hold(build, lambda d: [v for t in d["tags"] for v in t["downstreams"]], namespace, None, wait)
    return _answer(doc, {"Link": link} if link else None)


def overview_rows() -> list[dict]:
    """Every downstream's row: its record (up/down, last success and error), its backlog from the
    replication queue and its conflicts in the protection window (the UI shows the same rows)."""
    cfg = _config()
    rows = downstream_overview(cfg, registry().meta_store)
    backlog = downstream_backlog(cfg, current_app.extensions["angos.queues"]["replication"])
    window = cfg.global_.replication.conflict_protection
    since = now() - timedelta(seconds=window)
    conflicts: dict[str, int] = {}
    for doc in current_app.extensions["angos.conflicts"].newer_than(since):
        conflicts[doc.get("peer")] = conflicts.get(doc.get("peer"), 0) + 1
    for row in rows:
        b = backlog.get(row["downstream"])
        row["backlog"] = b.jobs if b else 0
        row["oldest_pending_secs"] = round(b.oldest_pending_seconds()) if b else 0
        row["dead_letters"] = b.dead_letters if b else 0
        row["conflicts"] = conflicts.get(row["downstream"], 0)
    return rows


@bp.route("/_replication/downstreams", methods=["GET"])
@action("get-replication-status")
def downstreams():
    return json_response({"downstreams": overview_rows()}, headers={"Cache-Control": "no-store"})
