"""The HTTP layer: ``create_app(cfg)`` builds the dependencies once and
registers the blueprints. Blueprints parse HTTP, call the registry and render;
they never touch storage directly."""

from __future__ import annotations

from flask import Flask

from ..auth import AccessControl
from ..auth.token import TokenService
from ..registry import build_registry


def create_app(cfg, registry=None) -> Flask:
    from . import (changes, conflicts, errors, ext, gate, health, jobs, observability, origin, pull_through,
                   replication_status, request_id, token)
    from .v2 import BLUEPRINTS

    app = Flask("angos")
    app.config["ANGOS_REALM"] = cfg.ui.name or "Angos"
    app.url_map.strict_slashes = False
    # Never 308-redirect "//etc/x" to "/etc/x": an empty path component is part of the
    # name, which the name grammar then refuses (NAME_INVALID), instead of silently
    # writing to another namespace.
    app.url_map.merge_slashes = False
    reg = registry or build_registry(cfg)
    app.extensions["angos.registry"] = reg
    # Registry tokens (GET /token): signing keys live on the metadata store, shared by every server using it.
    app.extensions["angos.tokens"] = TokenService(cfg, reg.meta_store)
    app.extensions["angos.access"] = AccessControl(cfg, tokens=app.extensions["angos.tokens"])
    app.extensions["angos.config"] = cfg

    _wire_replication(app, reg)
    _wire_conflicts(app, reg)
    _wire_change_feed(app, reg)
    _wire_cache(app, reg, cfg)
    _wire_event_webhooks(app, reg)
    _start_storage_usage(cfg, reg)

    observability.register(app)  # first, so request timing covers the access check too
    request_id.register(app)  # who and what, for the access line
    app.before_request(origin.refuse_cross_site)  # before credentials are even looked at
    app.before_request(gate.check_access)
    app.before_request(pull_through.refuse_writes)
    errors.register(app)
    app.register_blueprint(health.bp)
    app.register_blueprint(token.bp)
    app.register_blueprint(jobs.bp)
    app.register_blueprint(ext.bp)
    app.register_blueprint(conflicts.bp)
    app.register_blueprint(replication_status.bp)
    app.register_blueprint(changes.bp)
    if cfg.ui.enabled:
        from . import ui

        app.register_blueprint(ui.bp)
    for bp in BLUEPRINTS:
        app.register_blueprint(bp)
    # Outermost: every request (routed or not) gets its id before anything logs.
    app.wsgi_app = request_id.RequestIds(app.wsgi_app)
    return app


def _wire_cache(app: Flask, reg, cfg) -> None:
    """Pull-through: the cache facade (only when some repository has upstreams, so other
    configurations carry nothing of it) and ``?ns=`` routing (only with ``namespace`` set)."""
    from .pull_through import RegistryProxying

    if any(repo.upstream for repo in cfg.repository.values()):
        from ..cache import PullThroughCache

        queues = app.extensions["angos.queues"]
        app.extensions["angos.cache"] = PullThroughCache(
            reg, lambda kind, key, payload, delay=0.0: queues.enqueue("cache", kind, key, payload, delay))
    if any(repo.namespace for repo in cfg.repository.values()):
        app.wsgi_app = RegistryProxying(app.wsgi_app, cfg)


def _wire_conflicts(app: Flask, reg) -> None:
    """Refused replicated writes → the conflict log (``app.extensions["angos.conflicts"]``)."""
    from ..replication.conflicts import ConflictListener, build_conflict_log

    conflicts = app.extensions["angos.conflicts"] = build_conflict_log(reg, lambda: app.extensions["angos.config"])
    reg.listeners.add(ConflictListener(conflicts))


def _wire_replication(app: Flask, reg) -> None:
    """Registry events → replication jobs. The core never imports the queue; this is the seam."""
    from ..queue import JobQueues
    from ..replication.listener import ReplicationListener

    queues = app.extensions.setdefault("angos.queues", JobQueues(app.extensions["angos.config"]))

    def enqueue(job) -> bool:
        return queues.enqueue("replication", job.kind, job.lock_key, job.payload())

    reg.listeners.add(ReplicationListener(lambda: app.extensions["angos.config"], enqueue))
    _start_replication_gauges(app.extensions["angos.config"], reg, queues)


def _start_replication_gauges(cfg, reg, queues) -> None:
    """Per-downstream backlog and the reconcile run record on /metrics, in every mode: one worker
    at a time reads the queue and the record (see angos.queue.gauges)."""
    from ..replication import backlog, runs

    if not backlog.downstream_names(cfg):
        return
    from ..queue.gauges import start_refresher

    def refresh() -> None:
        backlog.publish(cfg, queues["replication"])
        runs.publish(reg)

    start_refresher(refresh, cfg.global_.replication.backlog_refresh_secs, "replication-gauges")


def _wire_event_webhooks(app: Flask, reg) -> None:
    """Registry activities → event webhooks (angos.events; nothing is wired without webhooks)."""
    from ..events import wire

    wire(reg, lambda: app.extensions["angos.config"], app.extensions["angos.queues"])


def _start_storage_usage(cfg, reg) -> None:
    """The blob store's size on /metrics, counted periodically by one worker (angos.storage_usage)."""
    from .. import storage_usage

    storage_usage.start(cfg, reg)


def _wire_change_feed(app: Flask, reg) -> None:
    """Registry events → the change feed ``GET /_ext/_changes`` serves (angos.replication.changefeed)."""
    from ..replication.changefeed import wire

    app.extensions["angos.changes"] = wire(reg)
