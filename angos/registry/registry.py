"""The Registry facade: OCI semantics over the blob and metadata stores.

Built once per process by ``build_registry(cfg)``; the HTTP layer and the
workers talk only to this object. It never imports Flask or the job queue:
other subsystems subscribe to its events through ``registry.listeners``.
Configuration can be swapped live with :meth:`reconfigure`.

Pulls are reported here (:meth:`record_pull`, :meth:`record_blob_pull`, called
by the HTTP layer on GETs) as ``manifest.pull`` and ``blob.pull`` activities:
vetted before the content is served, emitted after, and never built when no
watcher wants them (the pull path then pays one empty-list check).
"""

from __future__ import annotations

import json
import time
from datetime import datetime
from typing import Callable

from ..oci.digest import Digest
from ..storage import NotFound, build_locks, build_store
from . import paths
from .blobs import BlobService
from .catalog import Catalog
from .events import Activity, Actor, Listeners
from .inventory import Inventory
from .manifests import ManifestService, WritePolicy
from .referrers import ReferrerService
from .timestamps import format_ts, now, parse_ts
from .uploads import UploadService


class Registry:
    def __init__(self, cfg, blobs, meta, locks):
        self.blob_store = blobs
        self.meta_store = meta
        self.locks = locks
        self.listeners = Listeners()
        self.blobs = BlobService(blobs, meta, locks, self.listeners)
        self.uploads = UploadService(blobs, meta, locks, self.blobs, cfg.global_.max_blob_size,
                                     listeners=self.listeners)
        self.manifests = ManifestService(meta, locks, self.blobs, self.listeners, cfg.global_.max_manifest_size)
        self.referrers = ReferrerService(meta, self.manifests)
        self.catalog = Catalog(meta)
        self.inventory = Inventory(self)
        self.reconfigure(cfg)

    def reconfigure(self, cfg) -> None:
        self.cfg = cfg
        self.uploads.max_blob_size = cfg.global_.max_blob_size
        self.uploads.limits.max_sessions = cfg.global_.max_upload_sessions_per_namespace
        self.uploads.limits.idle_timeout = cfg.global_.upload_session_idle_timeout
        self.manifests.max_manifest_size = cfg.global_.max_manifest_size
        self.manifests.max_manifest_references = cfg.global_.max_manifest_references
        self.manifests.instance_name = cfg.global_.instance_name

    def write_policy(self, ns: str) -> WritePolicy:
        g = self.cfg.global_
        _, repo = self.cfg.repository_for(ns)
        enabled = g.immutable_tags
        exclusions = g.immutable_tags_exclusions
        if repo is not None:
            if repo.immutable_tags is not None:
                enabled = enabled or repo.immutable_tags
            if repo.immutable_tags_exclusions:
                exclusions = repo.immutable_tags_exclusions  # a repository list replaces the global one
        return WritePolicy(enabled, exclusions, g.allow_missing_manifest_references)

    def record_pull(self, ns: str, d: Digest, reference: str | None = None,
                    actor: Callable[[], Actor | None] | None = None) -> None:
        """A manifest GET of ``reference`` (resolved to ``d``) about to be served: vet it, record the
        pull time (``update_pull_time``), report it. ``actor()`` says who pulls; it is called only
        when some watcher wants pulls, so the hot path builds nothing nobody watches."""
        pulled = None
        if self.listeners.wants("manifest.pull"):
            reference = reference or str(d)
            pulled = Activity("manifest.pull", ns, actor() if actor else None, str(d), reference,
                              None if ":" in reference else reference)
            self.listeners.vet(pulled)
        if self.cfg.global_.update_pull_time:
            self.meta_store.put(paths.pull_time(ns, d), json.dumps({"pulled_at": format_ts(now())}).encode())
        self.listeners.emit(pulled)

    def record_blob_pull(self, ns: str, d: Digest, actor: Callable[[], Actor | None] | None = None) -> None:
        """A blob GET about to be served: vet and report it (nothing is stored); ``actor`` as for
        :meth:`record_pull`."""
        if self.listeners.wants("blob.pull"):
            pulled = Activity("blob.pull", ns, actor() if actor else None, str(d))
            self.listeners.vet(pulled)
            self.listeners.emit(pulled)

    def last_pull(self, ns: str, d: Digest) -> datetime | None:
        """When ``d`` was last pulled from ``ns`` (recorded with ``update_pull_time``); None if unknown."""
        try:
            return parse_ts(json.loads(self.meta_store.get(paths.pull_time(ns, d))).get("pulled_at"))
        except (NotFound, ValueError, AttributeError):
            return None

    def blob_usage(self, pause_every: int = 256) -> tuple[int, int]:
        """``(blobs, bytes)`` in the blob store: one listing, no reads. Cooperative: it sleeps
        for zero seconds every ``pause_every`` blobs (a few milliseconds of ``stat`` calls on a
        filesystem), so under gevent the requests of the process counting keep being served."""
        count = total = 0
        for _key, size in self.blob_store.sizes(paths.BLOBS):
            count += 1
            total += size
            if count % pause_every == 0:
                time.sleep(0)
        return count, total

    def check(self) -> None:
        """Raise when storage or locks cannot serve requests (used by /readyz)."""
        self.blob_store.check()
        self.meta_store.check()
        self.locks.check()


def build_registry(cfg) -> Registry:
    blobs = build_store(cfg.blob_store)
    meta = build_store(cfg.metadata)
    return Registry(cfg, blobs, meta, build_locks(cfg))
