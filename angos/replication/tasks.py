"""Registers the replication job kinds with the queue.

Imported by every process that drains the ``replication`` queue (the worker,
the server's in-process drain, ``scrub --replicate``). A
:class:`~angos.replication.pipeline.ReplicationFailed` becomes a retryable or
terminal queue error, so the queue's backoff and dead-letter rules apply; a
:class:`~angos.queue.kinds.DeferJob` (downstream down or busy) passes through.
A process that drains the queue also starts the downstream watch (:mod:`.watch`).
"""

from __future__ import annotations

from ..queue.kinds import RetryableJobError, TerminalJobError, on_drain, register
from ..registry import build_registry
from .handler import ReplicationHandler
from .jobs import KIND_REFERRERS, KIND_SYNC, LEGACY_KINDS, job_from_payload
from .pipeline import ReplicationFailed


def _handler(ctx) -> ReplicationHandler:
    registry = ctx.service("registry", lambda: build_registry(ctx.cfg))

    def enqueue(job) -> bool:
        return ctx.enqueue("replication", job.kind, job.lock_key, job.payload())

    return ctx.service("replication.handler", lambda: ReplicationHandler(registry, lambda: ctx.cfg, enqueue))


def run_job(envelope, ctx) -> None:
    try:
        job = job_from_payload(envelope.kind, envelope.payload)
    except (TypeError, ValueError, KeyError) as exc:
        raise TerminalJobError(f"malformed replication job: {exc}") from None
    try:
        _handler(ctx).run(job, envelope.attempts + 1, envelope.max_attempts)
    except ReplicationFailed as exc:
        if exc.retryable:
            raise RetryableJobError(str(exc)) from None
        raise TerminalJobError(str(exc)) from None


def start_watch(ctx) -> None:
    """The drain's downstream watch (:mod:`.watch`): series from start-up and idle probes."""
    from . import watch

    watch.start(_handler(ctx), lambda: ctx.cfg)


for _kind in (KIND_SYNC, KIND_REFERRERS, *LEGACY_KINDS):
    register(_kind, run_job)
on_drain("replication", start_watch)
