"""``GET /v2/<name>/referrers/<digest>`` with ``artifactType`` filtering and paging.

The referrers API never answers 404: an unknown subject or namespace is an
empty index. Pages are digest-ordered; ``n``/``last`` work as for tag lists and
a list too large for one index (the manifest size limit) is split, with a
``Link: <...>; rel="next"`` to the rest that keeps the filter.
"""

from urllib.parse import urlencode


from flask import Blueprint, request

from ...oci import media_types as mt
from ...oci.digest import Digest
from ...oci.reference import validate_name
from ...registry.referrers import referrers_index
from ..gate import action
from ..http import json_response, pagination, registry

bp = Blueprint("v2_referrers", __name__)


@bp.route("/v2/<path:name>/referrers/<digest>", methods=["GET"])
@action("get-referrers")
def referrers(name: str, digest: str):
    validate_name(name)
    d = Digest.parse(digest)
    artifact_type = request.args.get("artifactType") or None
    n, last = pagination()
    reg = registry()
    page, more = reg.referrers.page(name, d, artifact_type, n, last, reg.manifests.max_manifest_size)
    headers = {"OCI-Filters-Applied": "artifactType"} if artifact_type else {}
    if more:
        query = {"artifactType": artifact_type} if artifact_type else {}
        if n is not None:
            query["n"] = n
        query["last"] = page[-1]["digest"]
        headers["Link"] = f'</v2/{name}/referrers/{d}?{urlencode(query)}>; rel="next"'
    return json_response(referrers_index(page), content_type=mt.OCI_INDEX, headers=headers or None)
