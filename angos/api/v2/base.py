"""``GET /v2/``: the API version check."""

from flask import Blueprint

from ..gate import action
from ..http import json_response

bp = Blueprint("v2_base", __name__)


@bp.route("/v2/", methods=["GET", "HEAD"], strict_slashes=False)
@action("get-api-version")
def api_version():
    return json_response({}, headers={"Docker-Distribution-API-Version": "registry/2.0"})
