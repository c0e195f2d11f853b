"""The registry of job kinds: who runs a job of kind ``K``.

Producers enqueue ``(kind, lock_key, payload)``; consumers look the kind up
here. The queue never imports the packages that define kinds (replication,
cache): those packages register their handlers, and the process that drains
a queue imports them by module name (:func:`load_job_modules`) before it
starts. Extra modules can be named in ``ANGOS_JOB_MODULES`` (comma separated,
importable from ``sys.path``/``PYTHONPATH``); the tests use that to plug in
their own job kinds.

A handler is ``handler(job: Envelope, ctx: JobContext) -> None``:

- returning normally completes the job;
- raising :class:`TerminalJobError` dead-letters it at once;
- raising :class:`DeferJob` puts it back to pending for a while without
  counting an attempt (the handler's target cannot take it now);
- raising anything else (including :class:`RetryableJobError`) retries it
  with backoff until ``max_attempts``, then dead-letters it.

A job whose kind has no handler in the draining process fails as a
retryable error, so it dead-letters loudly instead of vanishing.

:func:`on_drain` registers background work that belongs with a queue's drain
(replication watches its downstreams): the drain runs each hook once, with the
queue's :class:`JobContext`, after its consumers start.
"""

from __future__ import annotations

import importlib
import logging
import os
import threading
from dataclasses import dataclass, field
from typing import Callable

from ..oci.errors import AngosError

log = logging.getLogger("angos.queue")

ENV_MODULES = "ANGOS_JOB_MODULES"


class TerminalJobError(AngosError):
    """The job can never succeed as it stands: dead-letter it without retrying."""


class RetryableJobError(AngosError):
    """A transient failure: run the job again after the backoff delay."""


class DeferJob(Exception):
    """Not now, and not a failure: run the job again after ``delay`` seconds without counting an
    attempt (its target is down, or busy with as many jobs as it may have at once)."""

    def __init__(self, delay: float, reason: str):
        super().__init__(reason)
        self.delay = max(float(delay), 0.0)


@dataclass
class JobContext:
    """What a handler gets besides its envelope.

    ``cfg`` is the configuration the drain was started with, ``queue`` the
    queue name, ``enqueue(queue, kind, lock_key, payload)`` lets a handler
    schedule follow-up work, and :meth:`service` memoises per-process objects
    (an HTTP session, the registry facade) across jobs.
    """

    cfg: object
    queue: str
    enqueue: Callable[..., bool]
    _services: dict = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def service(self, name: str, factory: Callable[[], object]):
        with self._lock:
            if name not in self._services:
                self._services[name] = factory()
            return self._services[name]

    def provide(self, name: str, obj: object) -> None:
        """Use ``obj`` as service ``name`` (a drain hosted in a web worker shares the worker's own
        objects, and with them its process-local locks)."""
        with self._lock:
            self._services[name] = obj


Handler = Callable[..., None]
_HANDLERS: dict[str, Handler] = {}


def register(kind: str, handler: Handler) -> Handler:
    """Register ``handler`` for ``kind``; registering a kind twice is an error (two owners)."""
    existing = _HANDLERS.get(kind)
    if existing is not None and existing is not handler:
        raise ValueError(f"job kind {kind!r} is already registered by {existing.__module__}")
    _HANDLERS[kind] = handler
    return handler


def job_kind(kind: str):
    """Decorator form of :func:`register`."""
    def deco(fn: Handler) -> Handler:
        return register(kind, fn)
    return deco


_DRAIN_HOOKS: dict[str, list[Callable[[JobContext], object]]] = {}


def on_drain(queue: str, hook: Callable[[JobContext], object]) -> None:
    """Run ``hook(ctx)`` once in every process that starts draining ``queue`` (``angos worker``, the
    server's drain; not ``angos replicate``, which only runs the jobs it queued). The hook must return
    at once (it starts a daemon thread) and read ``ctx.cfg`` when it needs the configuration, which a
    reload replaces."""
    hooks = _DRAIN_HOOKS.setdefault(queue, [])
    if hook not in hooks:
        hooks.append(hook)


def run_drain_hooks(queue: str, ctx: JobContext) -> None:
    for hook in _DRAIN_HOOKS.get(queue, ()):
        try:
            hook(ctx)
        except Exception:  # noqa: BLE001 - the jobs still run without it
            log.exception("a drain hook of the %s queue failed to start", queue)


def handler_for(kind: str) -> Handler | None:
    return _HANDLERS.get(kind)


def registered_kinds() -> list[str]:
    return sorted(_HANDLERS)


def load_job_modules(modules=()) -> list[str]:
    """Import the modules that register job kinds: ``modules`` then ``$ANGOS_JOB_MODULES``.

    A module that fails to import stops start-up with a clear error rather
    than leaving its jobs to dead-letter one by one.
    """
    names = list(modules) + [m.strip() for m in os.environ.get(ENV_MODULES, "").split(",") if m.strip()]
    for name in names:
        try:
            importlib.import_module(name)
        except Exception as exc:  # noqa: BLE001 - report any import failure the same way
            raise AngosError(f"cannot load job module {name!r}: {exc}") from None
    return names
