"""``/healthz`` (the process answers) and ``/readyz`` (storage and locks reachable).

Readiness never depends on the replication backlog: a slow downstream must not
take a healthy registry out of a load balancer.
"""

from __future__ import annotations

import logging

from flask import Blueprint

from .gate import action
from .http import json_response, registry

bp = Blueprint("health", __name__)
log = logging.getLogger("angos.api.health")


@bp.route("/healthz", methods=["GET", "HEAD"])
@action("healthz")
def healthz():
    return json_response({"status": "ok"})


@bp.route("/readyz", methods=["GET", "HEAD"])
@action("readyz")
def readyz():
    try:
        registry().check()
    except Exception as exc:  # noqa: BLE001 - any backend failure means "not ready"
        log.warning("not ready: %s", exc)
        return json_response({"status": "unavailable", "reason": str(exc)}, status=503)
    return json_response({"status": "ok"})
