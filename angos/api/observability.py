"""Request metrics and the ``/metrics`` endpoint (prometheus-flask-exporter).

``route`` labels are the action names of SPEC section 6, and ``method`` labels
the usual HTTP methods (any other is ``other``), so label cardinality stays
bounded whatever names and methods clients use. Bytes pushed and pulled are counted
per configured repository key (``_other`` for a namespace no repository
claims), for the same reason: pushed bytes are the request bodies of
``start-upload`` (monolithic), ``update-upload``, ``complete-upload`` and
``put-manifest`` as :func:`angos.api.http.body_chunks` received them; pulled
bytes are the ``Content-Length`` of ``GET`` answers of ``get-blob`` and
``get-manifest`` (200 and 206; a ``307`` to S3 sends no bytes from here).

Also published here: ``angos_build_info{version}`` and, in multiprocess mode,
the process and Python runtime series (:mod:`angos.process_metrics`).
"""

from __future__ import annotations

import os
import time

from flask import current_app, g, request

from .. import __version__, process_metrics
from .. import metrics as m
from .gate import action

_PUSHES = frozenset({"start-upload", "update-upload", "complete-upload", "put-manifest"})
_PULLS = frozenset({"get-blob", "get-manifest"})
# The methods counted by name in http_requests_total and http_request_duration_seconds; any other
# is counted as "other".
METHODS = frozenset({"GET", "HEAD", "PUT", "POST", "PATCH", "DELETE", "OPTIONS"})
OTHER = "_other"  # not a valid repository key (names start with a letter or digit), so never a clash


def repository_label(cfg, namespace: str | None) -> str:
    key = cfg.repository_for(namespace)[0] if namespace else None
    return key or OTHER


def _count_bytes(response) -> None:
    act = getattr(g, "action", None)
    if act in _PUSHES:
        received = getattr(g, "body_bytes", 0)
        if received:
            m.PUSHED_BYTES.labels(_repository()).inc(received)
    elif act in _PULLS and request.method == "GET" and response.status_code in (200, 206):
        sent = response.content_length
        if sent:
            m.PULLED_BYTES.labels(_repository()).inc(sent)


def _repository() -> str:
    fields = getattr(g, "request_fields", None) or {}
    return repository_label(current_app.extensions["angos.config"], fields.get("namespace"))


def register(app) -> None:
    cfg = app.extensions["angos.config"]
    m.BUILD_INFO.labels(__version__).set(1)
    for key in (*cfg.repository, OTHER):
        # Every configured repository's series exist from start-up, at 0.
        m.PUSHED_BYTES.labels(key)
        m.PULLED_BYTES.labels(key)
    process_metrics.start()

    @app.before_request
    def _start():
        g.started = time.perf_counter()
        m.HTTP_IN_FLIGHT.inc()
        g.in_flight = True
        if request.path == "/metrics" and os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            process_metrics.update()  # the answering worker's own values are current, not up to 5 s old

    @app.after_request
    def _record(response):
        route = getattr(g, "action", None) or "unknown"
        # Any token is a method to the HTTP parser; each label value is a series kept until restart.
        method = request.method if request.method in METHODS else "other"
        m.HTTP_REQUESTS.labels(method, route, str(response.status_code)).inc()
        started = getattr(g, "started", None)
        if started is not None:
            m.HTTP_DURATION.labels(method, route).observe(time.perf_counter() - started)
        _count_bytes(response)
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
