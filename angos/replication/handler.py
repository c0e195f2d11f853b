"""Run one replication job: current config → current local state → pipeline.

The handler looks the downstream up in the *current* configuration; a job
whose repository or downstream is gone fails loudly (an error log and a
retryable failure), so it dead-letters after the retry budget and
``scrub --replication-orphans`` can clear it. Outcomes are counted in
``angos_replication_push_total{downstream,outcome}``; pushed, converged and
superseded also stamp ``angos_replication_last_success_timestamp_seconds``.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable

from .. import metrics as m
from .client import DownstreamClient
from .jobs import DeleteJob, PushJob
from .mapping import remote_namespace
from .pipeline import CONVERGED, NOOP, PUSHED, SUPERSEDED, Pipeline, ReplicationFailed

log = logging.getLogger("angos.replication")

SUCCESS = {PUSHED, CONVERGED, SUPERSEDED}


class ReplicationHandler:
    def __init__(self, registry, config: Callable):
        self.registry = registry
        self.config = config
        self._clients: dict[tuple, DownstreamClient] = {}
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
                return ds
        raise ReplicationFailed(f"downstream {job.downstream!r} is no longer configured "
                                f"for repository {job.repository!r}")

    def run(self, job) -> str:
        try:
            ds = self._resolve(job)
        except ReplicationFailed as exc:
            log.error("replication job %s for %s failed: %s", job.lock_key, job.namespace, exc)
            m.REPLICATION_PUSH.labels(job.downstream, "failed").inc()
            raise
        target = remote_namespace(job.repository, job.namespace, ds.url)
        pipeline = Pipeline(self.registry, self._client(target.base_url, ds), ds, job.repository, job.namespace,
                            target)
        try:
            # A push and a delete of one reference have different queue keys (they must not
            # coalesce) and could run at once: a push that resolved the tag just before it was
            # deleted would then land after the delete. Serialising them per (downstream,
            # namespace, reference) makes either order converge.
            with self.registry.locks.lock(f"replicate:{ds.name}:{job.namespace}:{job.reference}"):
                if isinstance(job, PushJob):
                    outcome = pipeline.push(job.reference)
                elif isinstance(job, DeleteJob):
                    outcome = pipeline.delete(job.reference, job.changed_at, job.subject)
                else:  # pragma: no cover - job_from_payload only builds these
                    raise ReplicationFailed(f"unknown replication job {job!r}", retryable=False)
        except ReplicationFailed as exc:
            m.REPLICATION_PUSH.labels(ds.name, "failed").inc()
            log.warning("replication %s %s → %s/%s failed: %s", type(job).__name__, job.reference, ds.name,
                        target.namespace, exc)
            raise
        except Exception as exc:  # noqa: BLE001 - unexpected errors still count and retry
            m.REPLICATION_PUSH.labels(ds.name, "failed").inc()
            log.exception("replication %s %s → %s failed unexpectedly", type(job).__name__, job.reference, ds.name)
            raise ReplicationFailed(f"{type(exc).__name__}: {exc}") from exc
        if outcome.result != NOOP:
            m.REPLICATION_PUSH.labels(ds.name, outcome.result).inc()
        if outcome.result in SUCCESS:
            m.REPLICATION_LAST_SUCCESS.labels(ds.name).set(time.time())
        log.debug("replication %s %s → %s/%s: %s %s", type(job).__name__, job.reference, ds.name,
                  target.namespace, outcome.result, outcome.detail)
        return outcome.result
