"""Request metrics and the ``/metrics`` endpoint (prometheus-flask-exporter).

``route`` labels are the action names of SPEC section 6, so label cardinality
stays bounded whatever names clients use.
"""

from __future__ import annotations

import os
import time

from flask import g, request

from .. import metrics as m
from .gate import action


def register(app) -> None:
    @app.before_request
    def _start():
        g.started = time.perf_counter()
        m.HTTP_IN_FLIGHT.inc()
        g.in_flight = True

    @app.after_request
    def _record(response):
        route = getattr(g, "action", None) or "unknown"
        m.HTTP_REQUESTS.labels(request.method, route, str(response.status_code)).inc()
        started = getattr(g, "started", None)
        if started is not None:
            m.HTTP_DURATION.labels(request.method, route).observe(time.perf_counter() - started)
        return response

    @app.teardown_request
    def _done(_exc):
        if getattr(g, "in_flight", False):
            m.HTTP_IN_FLIGHT.dec()
            g.in_flight = False

    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # Sums every worker's values (and the in-process job drain's) from the shared directory.
        from prometheus_flask_exporter.multiprocess import MultiprocessInternalPrometheusMetrics as Exporter
    else:
        from prometheus_flask_exporter import PrometheusMetrics as Exporter
    Exporter(app=app, path="/metrics", export_defaults=False, metrics_decorator=action("metrics"))
