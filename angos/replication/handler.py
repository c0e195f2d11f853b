"""Run one replication job: current config → admission → current local state → pipeline.

The handler looks the downstream up in the *current* configuration when the
job starts and keeps that for the whole run (a reload meanwhile applies from
the next job); a job whose repository or downstream is gone fails loudly (an
error log and a retryable failure), so it dead-letters after the retry budget
and ``scrub --replication-orphans`` can clear it.

Before touching the network a job passes :class:`~.admission.Admission`: a
downstream that is down, or already running its share of the pool, defers the
job (no attempt spent, pool slot freed). An outage-class failure during the
job marks the downstream down and defers the job the same way; only
rejections count attempts.

Outcomes are counted in ``angos_replication_push_total{downstream,outcome}``;
pushed, converged and superseded also stamp
``angos_replication_last_success_timestamp_seconds``; a job deferred by an
outage counts ``deferred``. A superseded job is recorded in the conflict log
(:mod:`.conflicts`, sender side).

How a job for a tag settled is also recorded for the status API
(:class:`~.status.StatusRecorder`): the local state it is about is read before
the pipeline runs, and the record (in_sync, superseded, unsupported, failed
with its attempt, or down) is written when it changes, which wakes the
servers' waiters (:mod:`.notify`). Breaker transitions update the
downstream's own record.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable

from .. import metrics as m
from ..queue.kinds import DeferJob
from .admission import Admission
from .client import DownstreamClient
from .conflicts import build_conflict_log
from .jobs import ReferrersJob, SyncJob
from .mapping import remote_namespace
from .notify import build_publisher
from .pipeline import CONVERGED, NOOP, PUSHED, SUPERSEDED, DownstreamUnavailable, Pipeline, ReplicationFailed
from .status import StatusRecorder

log = logging.getLogger("angos.replication")

SUCCESS = {PUSHED, CONVERGED, SUPERSEDED}


class ReplicationHandler:
    def __init__(self, registry, config: Callable, enqueue: Callable[[object], bool] | None = None):
        """``enqueue(job)`` queues a follow-up job (the referrers fallback rebuild)."""
        self.registry = registry
        self.config = config
        self.enqueue = enqueue or (lambda job: False)
        self.status = StatusRecorder(registry, build_publisher(config()))
        self.admission = Admission(lambda: self.config().global_.replication,
                                   lambda: self.config().global_.max_concurrent_replication_jobs,
                                   lambda: _count_downstreams(self.config()),
                                   on_down=self.status.downstream_down, on_up=self.status.downstream_up)
        self._clients: dict[tuple, DownstreamClient] = {}
        self.conflicts = build_conflict_log(registry, config)
        self._lock = threading.Lock()

    def _client(self, base_url: str, ds) -> DownstreamClient:
        key = (base_url, ds)  # Downstream is frozen/hashable: a config change builds a new client
        with self._lock:
            client = self._clients.get(key)
            if client is None:
                client = self._clients[key] = DownstreamClient(base_url, ds)
            return client

    def _resolve(self, job):
        cfg = self.config()
        repo = cfg.repository.get(job.repository)
        if repo is None:
            raise ReplicationFailed(f"repository {job.repository!r} is no longer configured")
        for ds in repo.downstream:
            if ds.name == job.downstream:
                return cfg, ds
        raise ReplicationFailed(f"downstream {job.downstream!r} is no longer configured "
                                f"for repository {job.repository!r}")

    def run(self, job, attempt: int = 1, max_attempts: int | None = None) -> str:
        """Run ``job``, its ``attempt``-th run of at most ``max_attempts`` (for the status record)."""
        try:
            cfg, ds = self._resolve(job)
        except ReplicationFailed as exc:
            log.error("replication job %s for %s failed: %s", job.lock_key, job.namespace, exc)
            m.REPLICATION_PUSH.labels(job.downstream, "failed").inc()
            raise
        target = remote_namespace(job.repository, job.namespace, ds.url)
        client = self._client(target.base_url, ds)
        key = (ds.name, target.base_url)
        probe_timeout = cfg.global_.replication.probe_timeout_secs
        try:
            self.admission.enter(key, ds, lambda: client.ping(probe_timeout))
        except DeferJob:
            outage = self.admission.outage(key)
            if outage is not None:  # deferred because the downstream is down, not because it is busy
                self.status.down(job, None, *outage)
            raise
        about = self.status.about(job)

        def on_referrer(subject: str) -> None:
            self.enqueue(ReferrersJob(job.repository, ds.name, job.namespace, subject))

        pipeline = Pipeline(self.registry, client, ds, job.repository, job.namespace, target, on_referrer)
        finished = False
        started = time.monotonic()
        what = job.subject if isinstance(job, ReferrersJob) else job.reference
        try:
            if isinstance(job, SyncJob):
                outcome = pipeline.sync(job.reference, job.prune_at)
            elif isinstance(job, ReferrersJob):
                outcome = pipeline.rebuild_fallback(job.subject)
            else:  # pragma: no cover - job_from_payload only builds these
                raise ReplicationFailed(f"unknown replication job {job!r}", retryable=False)
            finished = True
        except DownstreamUnavailable as exc:
            delay = self.admission.trip(key, str(exc), exc.retry_after)
            m.REPLICATION_PUSH.labels(ds.name, "deferred").inc()
            self.status.down(job, about, *(self.admission.outage(key) or (None, str(exc))))
            raise DeferJob(delay, f"downstream {ds.name} unavailable: {exc}") from None
        except ReplicationFailed as exc:
            finished = True
            m.REPLICATION_PUSH.labels(ds.name, "failed").inc()
            log.warning("replication of %s:%s → %s/%s failed: %s", job.namespace, what, ds.name,
                        target.namespace, exc)
            self.status.failed(job, about, str(exc), attempt, max_attempts,
                               not exc.retryable or (max_attempts is not None and attempt >= max_attempts))
            raise
        except Exception as exc:  # noqa: BLE001 - unexpected errors still count and retry
            finished = True
            m.REPLICATION_PUSH.labels(ds.name, "failed").inc()
            log.exception("replication of %s:%s → %s failed unexpectedly", job.namespace, what, ds.name)
            self.status.failed(job, about, f"{type(exc).__name__}: {exc}", attempt, max_attempts,
                               max_attempts is not None and attempt >= max_attempts)
            raise ReplicationFailed(f"{type(exc).__name__}: {exc}") from exc
        finally:
            self.admission.leave(key, finished, time.monotonic() - started)
        if outcome.result != NOOP:
            m.REPLICATION_PUSH.labels(ds.name, outcome.result).inc()
        if outcome.result in SUCCESS:
            m.REPLICATION_LAST_SUCCESS.labels(ds.name).set(time.time())
        self.status.settled(job, about, outcome.result, outcome.detail, outcome.winner)
        if outcome.result == SUPERSEDED:
            self.conflicts.record_superseded(ds.name, job.namespace, outcome)
        # One line per job saying what it did (a delete reads "pushed (deleted)"; a reference
        # unknown here "noop"), so the queue's "succeeded" is never the only word on it.
        log.log(logging.DEBUG if outcome.result in (CONVERGED, NOOP) else logging.INFO,
                "replication of %s:%s → %s/%s: %s%s", job.namespace, what, ds.name, target.namespace,
                outcome.result, f" ({outcome.detail})" if outcome.detail else "")
        return outcome.result


def _count_downstreams(cfg) -> int:
    """Distinct downstreams (name and URL host) across the configuration: who shares the pool."""
    return len({(ds.name, remote_namespace(key, key, ds.url).base_url)
                for key, repo in cfg.repository.items() for ds in repo.downstream}) or 1
