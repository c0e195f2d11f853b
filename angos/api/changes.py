"""``GET /_ext/_changes?since=<cursor>&n=<count>`` (policy action ``list-changes``): the change feed.

Answers ``{"changes": [{cursor, namespace, tag, op, digest, author_time}],
"next", "more", "head", "epoch", "trimmed_before"}``: up to ``n`` tag changes
recorded after ``since`` (from the oldest kept one without it), oldest first.

- ``next``: continue from here (``since`` again when nothing followed it).
  ``more`` is true when another page is waiting. A page can hold fewer than
  ``n`` changes even then: entries in namespaces the caller may not see are
  skipped, but ``next`` moves past them.
- ``head``: the cursor to save *before* reading, so that the next read misses
  nothing recorded meanwhile (now minus ``change_feed_grace``; see
  :mod:`angos.replication.changefeed` for the ordering guarantee).
- ``epoch``: the feed's identity; a different one means earlier cursors do not
  apply here.
- A ``since`` older than the feed's trim point answers ``410`` with code
  ``CURSOR_EXPIRED`` and ``detail.trimmed_before``: compare everything again.
  A malformed ``since`` or ``n`` answers ``400 UNSUPPORTED``. ``n`` defaults
  to 100 and is capped at :data:`MAX_N`.

The feed spans every namespace, so the gate asks the global policy about
``list-changes`` (no ``request.namespace``), and each entry is then shown only
if the caller may ``list-changes`` with that entry's ``request.namespace``:
a repository's own policy keeps its tag names to itself.
"""

from __future__ import annotations

from flask import Blueprint, current_app, request

from ..digits import count
from ..oci.errors import Unsupported
from ..replication.changefeed import ChangeFeed, check_cursor
from .gate import action, can
from .http import json_response

bp = Blueprint("changes", __name__, url_prefix="/_ext")

DEFAULT_N = 100
MAX_N = 1000


def feed() -> ChangeFeed:
    return current_app.extensions["angos.changes"]


def _count() -> int:
    raw = request.args.get("n")
    if raw is None or raw == "":
        return DEFAULT_N
    n = count(raw)
    if n is None:
        raise Unsupported(f"n must be a non-negative integer, got {raw[:32]!r}")
    return min(n, MAX_N)


@bp.route("/_changes", methods=["GET"])
@action("list-changes")
def changes():
    since = request.args.get("since")
    since = check_cursor(since) if since else None
    n = _count()
    grace = current_app.extensions["angos.config"].global_.replication.change_feed_grace
    head = ChangeFeed.head(grace)  # taken before reading: see the module docstring
    page = feed().read(since, n)
    shown = [c.to_json() for c in page.changes if can("list-changes", namespace=c.namespace)]
    return json_response({"changes": shown, "next": page.next, "more": page.more, "head": head,
                          "epoch": page.epoch, "trimmed_before": page.trimmed_before})
