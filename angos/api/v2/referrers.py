"""``GET /v2/<name>/referrers/<digest>`` with ``artifactType`` filtering.

The referrers API never answers 404: an unknown subject or namespace is an
empty index.
"""

from flask import Blueprint, request

from ...oci import media_types as mt
from ...oci.digest import Digest
from ...oci.reference import validate_name
from ...registry.referrers import referrers_index
from ..gate import action
from ..http import json_response, registry

bp = Blueprint("v2_referrers", __name__)


@bp.route("/v2/<path:name>/referrers/<digest>", methods=["GET"])
@action("get-referrers")
def referrers(name: str, digest: str):
    validate_name(name)
    d = Digest.parse(digest)
    artifact_type = request.args.get("artifactType") or None
    entries = registry().referrers.list(name, d, artifact_type)
    headers = {"OCI-Filters-Applied": "artifactType"} if artifact_type else None
    return json_response(referrers_index(entries), content_type=mt.OCI_INDEX, headers=headers)
