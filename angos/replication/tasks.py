"""Registers the replication job kinds with the queue.

Imported by every process that drains the ``replication`` queue (the worker,
the server's in-process drain, ``scrub --replicate``). A
:class:`~angos.replication.pipeline.ReplicationFailed` becomes a retryable or
terminal queue error, so the queue's backoff and dead-letter rules apply.
"""

from __future__ import annotations

from ..queue.kinds import RetryableJobError, TerminalJobError, register
from ..registry import build_registry
from .handler import ReplicationHandler
from .jobs import KIND_DELETE, KIND_PUSH, job_from_payload
from .pipeline import ReplicationFailed


def _handler(ctx) -> ReplicationHandler:
    registry = ctx.service("registry", lambda: build_registry(ctx.cfg))
    return ctx.service("replication.handler", lambda: ReplicationHandler(registry, lambda: ctx.cfg))


def run_job(envelope, ctx) -> None:
    try:
        job = job_from_payload(envelope.kind, envelope.payload)
    except (TypeError, ValueError) as exc:
        raise TerminalJobError(f"malformed replication job: {exc}") from None
    try:
        _handler(ctx).run(job)
    except ReplicationFailed as exc:
        if exc.retryable:
            raise RetryableJobError(str(exc)) from None
        raise TerminalJobError(str(exc)) from None


register(KIND_PUSH, run_job)
register(KIND_DELETE, run_job)
