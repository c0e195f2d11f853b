"""The event path (SPEC 8.2): registry events become replication jobs.

The registry emits an event only when a write changed local state, which is
what stops A→B→A and longer loops. For each event this listener enqueues one
job per downstream of the namespace's repository whose mode includes events
and whose ``namespace_filter`` matches; a downstream that maps back onto this
very namespace on this instance is a self-loop and is skipped. The enqueue
function must not raise into the request; failures are its to log and count.
"""

from __future__ import annotations

import logging
from typing import Callable

from ..registry.events import ManifestDeleted, ManifestPushed
from .jobs import SyncJob
from .mapping import is_self_loop, matches_filter, remote_namespace

log = logging.getLogger("angos.replication")


class ReplicationListener:
    def __init__(self, config: Callable, enqueue: Callable[[object], bool]):
        """``config()`` returns the current Config (it may be reloaded); ``enqueue(job)`` queues one job."""
        self.config = config
        self.enqueue = enqueue

    def downstreams(self, namespace: str, mode: str = "events"):
        return applicable_downstreams(self.config(), namespace, mode)

    def __call__(self, event) -> None:
        if isinstance(event, (ManifestPushed, ManifestDeleted)):
            # One job per reference for pushes and deletes alike: it sends whatever the
            # reference's state is when it runs (see angos.replication.jobs).
            for repo_key, ds, _ in self.downstreams(event.namespace):
                self.enqueue(SyncJob(repo_key, ds.name, event.namespace, event.reference))


def applicable_downstreams(cfg, namespace: str, mode: str = "events"):
    """``(repository key, downstream, target)`` for each downstream ``namespace`` replicates to:
    its mode includes ``mode`` ("events", "reconcile", or "any" for both), its filter matches,
    and it is not this very namespace on this instance (a self-loop, skipped)."""
    repo_key, repo = cfg.repository_for(namespace)
    if repo is None:
        return
    for ds in repo.downstream:
        if mode == "events" and not ds.events:
            continue
        if mode == "reconcile" and not ds.reconcile:
            continue
        if not matches_filter(namespace, ds.namespace_filter):
            continue
        target = remote_namespace(repo_key, namespace, ds.url)
        if is_self_loop(target, namespace, cfg.server.bind_address, cfg.server.port):
            log.debug("downstream %s maps %s onto itself: self-loop suppressed", ds.name, namespace)
            continue
        yield repo_key, ds, target
