"""``GET /_ext/_replication/conflicts`` (policy action ``list-replication-conflicts``): the conflict log.

Answers ``{"conflicts": [record, ...]}``, newest first (records as
:mod:`angos.replication.conflicts` describes them). Paged with ``n`` (1-1000,
default 100; larger values are capped) and ``last`` (the ``id`` of the last
record of the previous page); when more follow, a ``Link: <...>; rel="next"``
header names the next page. A malformed ``n`` or ``last`` is ``400
UNSUPPORTED``. The URL names no namespace, so only ``[global.access_policy]``
decides (``request.n`` and ``request.last`` are there for rules).
"""

from __future__ import annotations

from urllib.parse import urlencode

from flask import Blueprint, current_app, request

from ..digits import count
from ..oci.errors import Unsupported
from ..replication.conflicts import DEFAULT_PAGE, ID, MAX_PAGE
from .gate import action
from .http import json_response

bp = Blueprint("replication_conflicts", __name__, url_prefix="/_ext/_replication")


def _paging() -> tuple[int, str | None]:
    raw_n = request.args.get("n", str(DEFAULT_PAGE))
    if not count(raw_n):
        raise Unsupported(f"n must be a positive integer, got {raw_n[:32]!r}")
    last = request.args.get("last") or None
    if last is not None and not ID.fullmatch(last):
        raise Unsupported(f"last must be the id of a conflict record, got {last[:64]!r}")
    return min(int(raw_n), MAX_PAGE), last


@bp.route("/conflicts", methods=["GET"])
@action("list-replication-conflicts")
def conflicts():
    n, last = _paging()
    records, nxt = current_app.extensions["angos.conflicts"].page(n, last)
    headers = None
    if nxt is not None:
        headers = {"Link": f'</_ext/_replication/conflicts?{urlencode({"n": n, "last": nxt})}>; rel="next"'}
    return json_response({"conflicts": records}, headers=headers)
