"""``GET /v2/_catalog`` with ``n``/``last`` pagination and ``Link``."""

from flask import Blueprint

from ..gate import action
from ..http import json_response, paginate, pagination, registry

bp = Blueprint("v2_catalog", __name__)


@bp.route("/v2/_catalog", methods=["GET"])
@action("list-catalog")
def catalog():
    n, last = pagination()
    page, link = paginate(registry().catalog.namespaces(), n, last, "/v2/_catalog")
    return json_response({"repositories": page}, headers={"Link": link} if link else None)
