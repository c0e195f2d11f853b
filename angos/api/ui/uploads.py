"""A namespace's upload sessions: ``GET /_ui/namespaces/<namespace>/uploads`` (``list-uploads``)
lists them (session id, bytes received so far, age), oldest first, :data:`PAGE` a page (``n``,
``last`` = the last session id of the previous page); ``POST
/_ui/namespaces/<namespace>/uploads/<uuid>/cancel`` (``cancel-upload``) cancels one exactly as
``DELETE /v2/<namespace>/blobs/uploads/<uuid>`` does, then 303s back to the list with a fixed
notice. An unknown or finished session is a 404 page.

The data is :meth:`~angos.registry.inventory.Inventory.uploads`, the same as
``GET /_ext/<namespace>/_uploads``; a Cancel button appears only where the policy allows
``cancel-upload`` for that session.
"""

from __future__ import annotations

import re

from flask import current_app, redirect, request, url_for

from ...digits import count
from ...oci.errors import Unsupported
from ...oci.reference import validate_name
from ..gate import action, can
from ..http import registry
from . import bp
from .common import home_crumb, page

PAGE = 100
MAX_PAGE = 1000
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
NOTICES = {"cancelled": "Upload {uuid} cancelled."}  # fixed texts: a crafted link cannot add words


def _page_size() -> int:
    raw = request.args.get("n", str(PAGE))
    n = count(raw)
    if not n:
        raise Unsupported(f"n must be a positive integer, got {raw[:32]!r}", status=400)
    return min(n, MAX_PAGE)


def _crumbs(ns: str) -> list:
    crumbs = [home_crumb()]
    repository = current_app.extensions["angos.config"].repository_for(ns)[0]
    if repository is not None:
        crumbs.append((repository, url_for("ui.browse_namespaces", repository=repository)))
    crumbs.append((ns, url_for("ui.browse_revisions", namespace=ns)))
    crumbs.append(("uploads", None))
    return crumbs


@bp.route("/namespaces/<path:namespace>/uploads", methods=["GET"])
@action("list-uploads")
def namespace_uploads(namespace: str):
    validate_name(namespace)
    n = _page_size()
    rows = registry().inventory.uploads(namespace)
    last = request.args.get("last") or None
    if last is not None:
        # Sessions are listed oldest first; one cancelled since the last page falls back to the start.
        ids = [u["uuid"] for u in rows]
        rows = rows[ids.index(last) + 1:] if last in ids else rows
    more = len(rows) > n
    rows = rows[:n]
    for row in rows:
        row["may_cancel"] = can("cancel-upload", namespace=namespace, uuid=row["uuid"])
    done, upload = request.args.get("done", ""), request.args.get("upload", "")
    notice = NOTICES[done].format(uuid=upload) if done in NOTICES and _UUID.fullmatch(upload) else None
    return page("uploads.html", f"Uploads in progress in {namespace}", _crumbs(namespace),
                section="repositories", namespace=namespace, uploads=rows, notice=notice,
                any_cancel=any(r["may_cancel"] for r in rows), next=rows[-1]["uuid"] if more and rows else None, n=n)


@bp.route("/namespaces/<path:namespace>/uploads/<uuid>/cancel", methods=["POST"])
@action("cancel-upload")
def cancel_namespace_upload(namespace: str, uuid: str):
    validate_name(namespace)
    registry().uploads.cancel(namespace, uuid)  # BLOB_UPLOAD_UNKNOWN (404) when it is not there
    return redirect(url_for("ui.namespace_uploads", namespace=namespace, done="cancelled", upload=uuid), code=303)
