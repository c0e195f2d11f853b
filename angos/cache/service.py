"""The pull-through cache facade the HTTP layer and the cache jobs use.

Role: decide per namespace whether pull-through applies (its repository lists
``upstream`` tables) and route reads to :mod:`.manifests` and :mod:`.blobs`,
counting each in ``angos_cache_requests_total{repository,kind,result}``.
Namespaces of other repositories never reach this module's storage or
network code: :meth:`PullThroughCache.repository` is a lookup in the
configuration only, so ordinary namespaces pay no extra I/O.

Also answers, for the access gate, whether serving a read will fetch from an
upstream (``request.cache_fill``), resolves ``?ns=`` registry hosts to
repositories, and schedules background fills: after an image manifest is
fetched, each of its blobs not yet stored becomes a ``cache.fill_blob`` job
(coalesced by digest), so the bytes a client has not asked for are fetched
once, by the queue's drain. The jobs are queued off the request (the manifest
answer does not wait for them) and become due :data:`FILL_DELAY` seconds
later: a client in the middle of a pull asks for the blobs within that time
and streams them from a fill in its own worker, and the job then finds them
stored and does nothing.
"""

from __future__ import annotations

import logging
import threading

from .. import metrics as m
from ..oci.digest import Digest, is_digest
from ..oci.errors import OciError
from ..oci.reference import validate_name, validate_tag
from .blobs import BlobCache, ServedBlob
from .fills import Fills
from .manifests import FAILED, ManifestCache, Served
from .upstreams import Upstreams

log = logging.getLogger("angos.cache")

KIND_FILL_BLOB = "cache.fill_blob"
FILL_DELAY = 5.0


class PullThroughCache:
    def __init__(self, registry, enqueue=None, config=None):
        """``enqueue(kind, lock_key, payload, delay)`` queues a ``cache`` job (None: no background
        fills); ``config()`` is the current configuration (default: the registry's)."""
        self.registry = registry
        self.enqueue = enqueue
        self._config = config or (lambda: registry.cfg)
        self.upstreams = Upstreams()
        self.fills = Fills(registry, registry.locks)
        self.manifests = ManifestCache(registry, self.upstreams, self._schedule_blobs)
        self.blobs = BlobCache(registry, self.upstreams, self.fills)

    @property
    def cfg(self):
        return self._config()

    def repository(self, ns: str):
        """``(repo_key, repo)`` when ``ns`` is pull-through, else None."""
        key, repo = self.cfg.repository_for(ns)
        if repo is None or not repo.upstream:
            return None
        return key, repo

    def repository_for_host(self, host: str) -> str | None:
        """The repository whose ``namespace`` is registry ``host`` (the ``?ns=`` parameter), if any."""
        host = host.lower()
        for key, repo in self.cfg.repository.items():
            if repo.namespace is not None and repo.namespace.lower() == host:
                return key
        return None

    # -- reads

    def get_manifest(self, ns: str, reference: str, may_fill) -> Served:
        return self._counted(ns, "manifest", lambda key, repo: self.manifests.get(key, repo, ns, reference, may_fill))

    def get_blob(self, ns: str, d: Digest, head: bool) -> ServedBlob:
        return self._counted(ns, "blob", lambda key, repo: self.blobs.get(key, repo, ns, d, head))

    def _counted(self, ns: str, kind: str, read):
        """``read(repo_key, repo)``, counted in angos_cache_requests_total by its result (or failed)."""
        repo_key, repo = self.repository(ns)
        try:
            served = read(repo_key, repo)
        except Exception:
            m.CACHE_REQUESTS.labels(repo_key, kind, FAILED).inc()
            raise
        m.CACHE_REQUESTS.labels(repo_key, kind, served.result).inc()
        return served

    def would_fill(self, ns: str, action: str, reference: str | None, digest: str | None) -> bool | None:
        """For the access policy: whether serving this read fetches content from an upstream (it is
        not cached). None when the request is not a pull-through read."""
        if action not in ("get-manifest", "get-blob") or not ns or self.repository(ns) is None:
            return None
        try:
            validate_name(ns)
            if action == "get-blob":
                return not self.blobs.cached(ns, Digest.parse(digest))
            manifests = self.registry.manifests
            if is_digest(reference):
                return not manifests.has_revision(ns, Digest.parse(reference))
            return manifests.tag_record(ns, validate_tag(reference)) is None
        except OciError:
            return None  # a malformed name or reference: the handler refuses it

    # -- background fills

    def _schedule_blobs(self, repo_key: str, ns: str, d: Digest, parsed) -> None:
        if self.enqueue is None or parsed.is_index:
            return  # an index's children are fetched only when a client asks for one
        wanted = [desc.digest for desc in parsed.blobs if not desc.urls]  # urls: non-distributable
        if wanted:
            threading.Thread(target=self._enqueue_fills, args=(repo_key, ns, wanted), daemon=True,
                             name="cache-schedule").start()

    def _enqueue_fills(self, repo_key: str, ns: str, digests: list) -> None:
        try:
            for digest in digests:
                if not self.fills.committed(digest):
                    self.enqueue(KIND_FILL_BLOB, f"blob|{digest}",
                                 {"repository": repo_key, "namespace": ns, "digest": str(digest)}, FILL_DELAY)
        except Exception:  # noqa: BLE001 - an optimisation: a failure only leaves blobs to client requests
            log.exception("scheduling background fills in %s failed", ns)

    def prefetch(self, ns: str, d: Digest) -> str:
        """Bring ``d`` into ``ns`` (a ``cache.fill_blob`` job): the fill's final state."""
        found = self.repository(ns)
        if found is None:
            raise LookupError(f"{ns} is no longer a pull-through namespace")
        repo_key, repo = found
        if self.blobs.cached(ns, d) and self.fills.committed(d):
            return "done"
        if self.fills.committed(d):
            self.blobs.finish(ns, d)
            return "done"
        stall = max(up.read_timeout_secs for up in repo.upstream)
        fill = self.fills.join(ns, d, lambda: self.blobs.open_upstream(repo_key, repo, ns, d), stall, repo_key)
        state = fill.wait_done()
        if state == "failed":
            raise fill.error
        self.blobs.finish(ns, d)
        return state
