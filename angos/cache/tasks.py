"""Registers the ``cache`` queue's job kinds.

``cache.fill_blob`` (payload ``repository``, ``namespace``, ``digest``; lock
key ``blob|<digest>``, so one job per blob however many manifests list it)
brings a blob a fetched manifest references into storage before any client
asks for it. It runs the very fill a client request would (:mod:`.fills`),
so a job and a request for the same blob share one upstream fetch, in
whichever process wins the fill lock. An upstream that does not have the
blob is terminal; anything else (outage, bad bytes) retries with backoff.
"""

from __future__ import annotations

from ..oci.digest import Digest
from ..oci.errors import BlobUnknown, OciError
from ..queue.kinds import RetryableJobError, TerminalJobError, register
from ..registry import build_registry
from .service import KIND_FILL_BLOB, PullThroughCache


def _cache(ctx) -> PullThroughCache:
    registry = ctx.service("registry", lambda: build_registry(ctx.cfg))
    # Jobs never schedule more jobs: the manifest they came from already did. Each job sees the
    # drain's current configuration (it reloads), e.g. a repository's new upstream URL.
    return ctx.service("cache", lambda: PullThroughCache(registry, config=lambda: ctx.cfg))


def run_fill_blob(envelope, ctx) -> None:
    payload = envelope.payload or {}
    try:
        ns, d = payload["namespace"], Digest.parse(payload["digest"])
    except (KeyError, TypeError, OciError) as exc:
        raise TerminalJobError(f"malformed cache job: {exc}") from None
    try:
        _cache(ctx).prefetch(ns, d)
    except LookupError as exc:
        raise TerminalJobError(str(exc)) from None
    except BlobUnknown as exc:
        raise TerminalJobError(exc.message) from None
    except OciError as exc:
        raise RetryableJobError(exc.message) from None


register(KIND_FILL_BLOB, run_fill_blob)
