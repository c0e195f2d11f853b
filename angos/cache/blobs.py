"""Blobs through the cache: serve what is stored, otherwise fetch once and stream.

Role: answer a blob read in a pull-through namespace. Contract of
:meth:`BlobCache.get` (returns a :class:`ServedBlob`):

- The namespace holds a grant and the bytes exist: ``hit``, served like any
  blob (``sendfile``, S3 redirects).
- The bytes are stored (another namespace fetched them) but this namespace
  has no grant: it gets one, with no transfer, if one of its cached manifests
  references the blob (so this works while the upstream is down), or else if
  its upstream confirms with a ``HEAD`` that it serves the blob there;
  otherwise the blob is unknown to it (404 ``BLOB_UNKNOWN``; 503 when its
  upstream cannot be reached to say). Knowing a digest is not enough.
- Otherwise, for a GET: the blob is fetched through :mod:`.fills` (one upstream
  fetch shared by every reader, in every process) and the response streams
  the bytes as they arrive (``miss``). The response starts only once the
  upstream has answered, so "not there" (404 ``BLOB_UNKNOWN``) and "no
  upstream reachable" (503) are clean errors naming the upstream.
- For a HEAD of a blob not stored: the upstream is asked with a HEAD and its
  size is reported; nothing is fetched.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..digits import count
from ..oci.digest import Digest
from ..oci.errors import BadGateway, BlobUnknown
from ..registry import paths
from ..registry.blobs import BlobHandle
from .fills import DONE, FAILED, Fill, Fills
from .manifests import HIT, MISS


@dataclass(frozen=True)
class ServedBlob:
    result: str
    handle: BlobHandle | None = None   # serve from storage
    fill: Fill | None = None           # stream while it fills
    size: int | None = None            # for a fill or an upstream HEAD


class BlobCache:
    def __init__(self, registry, upstreams, fills: Fills):
        self.registry = registry
        self.upstreams = upstreams
        self.fills = fills

    def cached(self, ns: str, d: Digest) -> bool:
        return self.registry.blobs.has_grant(ns, d)

    def get(self, repo_key: str, repo, ns: str, d: Digest, head: bool) -> ServedBlob:
        blobs = self.registry.blobs
        if blobs.has_grant(ns, d):
            try:
                return ServedBlob(HIT, handle=blobs.stat(ns, d))
            except BlobUnknown:
                pass  # granted but the bytes are gone (scrub found them corrupt): fetch them again
        if self.fills.committed(d):
            # Stored for another namespace. Never fetched again: either this one may have it (a
            # manifest of its own lists it, or its upstream says it serves it) or it is unknown here.
            if self._may_read(repo_key, repo, ns, d):
                return ServedBlob(HIT, handle=self._grant(ns, d))
            raise BlobUnknown(f"blob {d} unknown to {ns}")
        if head:
            return self._head_upstream(repo_key, repo, ns, d)
        stall = max(up.read_timeout_secs for up in repo.upstream)
        fill = self.fills.join(ns, d, lambda: self.open_upstream(repo_key, repo, ns, d), stall, repo_key)
        if fill.namespace != ns and not self._may_read(repo_key, repo, ns, d):
            raise BlobUnknown(f"blob {d} unknown to {ns}")
        state = fill.wait_started()
        if state == FAILED:
            raise fill.error
        if state != DONE and fill.size is None:
            state = fill.wait_done()  # no length from the upstream: serve once stored
            if state == FAILED:
                raise fill.error
        if state == DONE:
            try:
                return ServedBlob(MISS, handle=blobs.stat(ns, d))  # granted with the commit, as a rule
            except BlobUnknown:
                return ServedBlob(MISS, handle=self._grant(ns, d))  # the leader filled it for another namespace
        return ServedBlob(MISS, fill=fill, size=fill.size)

    def finish(self, ns: str, d: Digest) -> None:
        """After a streamed fill completed: make sure ``ns`` holds a grant (its leader may have been
        another namespace)."""
        if not self.registry.blobs.has_grant(ns, d):
            self._grant(ns, d)

    # -- helpers

    def _grant(self, ns: str, d: Digest) -> BlobHandle:
        blobs = self.registry.blobs
        with self.registry.locks.lock(f"blob:{d}"):
            if not self.registry.blob_store.exists(paths.blob_data(d)):
                raise BlobUnknown(f"blob {d} unknown to {ns}")
            blobs.grant(ns, d)
        return blobs.stat(ns, d)

    def _may_read(self, repo_key: str, repo, ns: str, d: Digest) -> bool:
        """Whether ``ns`` may have bytes another namespace fetched. Raises UpstreamUnavailable when
        only its upstream could say and cannot be reached (a 503 naming it, not a 404)."""
        if self.registry.blobs.is_referenced(ns, d):
            return True
        answer = self.upstreams.call(repo_key, repo, ns, "HEAD",
                                     lambda client, remote: client.head_blob_response(remote, str(d)))
        answer.response.close()
        return answer.response.status_code == 200

    def _head_upstream(self, repo_key: str, repo, ns: str, d: Digest) -> ServedBlob:
        answer = self.upstreams.call(repo_key, repo, ns, "HEAD",
                                     lambda client, remote: client.head_blob_response(remote, str(d)))
        resp = answer.response
        resp.close()
        if resp.status_code == 404:
            raise BlobUnknown(f"blob {d} is not cached and upstream {answer.where()} does not have it")
        if resp.status_code != 200:
            raise BadGateway(f"upstream {answer.where()} answered {resp.status_code} to HEAD blob {d}")
        length = resp.headers.get("Content-Length")
        return ServedBlob(MISS, size=count(length))

    def open_upstream(self, repo_key: str, repo, ns: str, d: Digest):
        answer = self.upstreams.call(repo_key, repo, ns, "GET",
                                     lambda client, remote: client.get_blob(remote, str(d)))
        resp = answer.response
        if resp.status_code == 200:
            return answer
        resp.close()
        if resp.status_code == 404:
            raise BlobUnknown(f"blob {d} is not cached and upstream {answer.where()} does not have it")
        raise BadGateway(f"upstream {answer.where()} answered {resp.status_code} to GET blob {d}")
