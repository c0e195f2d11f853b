"""``GET /v2/<name>/tags/list`` with ``n``/``last`` pagination and ``Link``."""

from flask import Blueprint

from ...oci.reference import validate_name
from ..gate import action
from ..http import json_response, paginate, pagination, registry

bp = Blueprint("v2_tags", __name__)


@bp.route("/v2/<path:name>/tags/list", methods=["GET"])
@action("list-tags")
def list_tags(name: str):
    validate_name(name)
    n, last = pagination()
    tags = registry().manifests.list_tags(name)
    page, link = paginate(tags, n, last, f"/v2/{name}/tags/list")
    return json_response({"name": name, "tags": page}, headers={"Link": link} if link else None)
