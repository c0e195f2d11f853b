"""Manifests through the cache: serve, revalidate, or fetch and store.

Role: answer a manifest read in a pull-through namespace. Contract of
:meth:`ManifestCache.get` (returns a :class:`Served`; results are the
``result`` label of ``angos_cache_requests_total``):

- **By digest:** a cached revision is served with no upstream request
  (``hit``); a missing one is fetched by digest, its bytes checked against the
  digest, stored and served (``miss``). A client reads an index's children this
  way, so only the children it asks for are ever fetched.
- **By tag, cached, immutable** (the repository's ``immutable_tags`` and
  exclusions, as for pushes): served with no upstream request (``hit``).
- **By tag, cached, mutable:** one ``HEAD`` upstream. Same digest → served
  (``revalidated``); another digest → fetched, stored, served (``miss``).
- **By tag, not cached:** fetched, stored, served (``miss``).
- **Upstream unreachable, or no usable answer, for a cached tag:** the cached
  revision is served with a warning (``stale``) and a log line; ``may_fill()``
  false (the access policy forbids fetching) serves it the same way when the
  upstream has moved on. Only content never cached fails: ``MANIFEST_UNKNOWN``
  (404) when the upstream does not have it, ``UNAVAILABLE`` (503) when no
  upstream answered, 502 when one answered with something unusable; each
  message names the upstream.

A fetched body is read up to ``max_manifest_size`` and no further; its digest
must match the reference (by digest) or the upstream's
``Docker-Content-Digest`` (by tag). It is stored with ordinary manifest
writes, by digest plus the tag, under a write policy with no immutability (the
cache mirrors the upstream; immutability here means "do not revalidate").
Concurrent misses of one reference in a process share one fetch.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable

import requests

from .. import metrics as m
from ..digits import count
from ..oci.digest import Digest, is_digest
from ..oci.errors import BadGateway, DigestInvalid, ManifestInvalid, ManifestUnknown, OciError
from ..oci.manifest import parse_manifest
from ..registry.events import CACHE_FILL
from ..registry.manifests import Revision, WritePolicy
from ..registry.tags import immutable
from ..flight import SingleFlight
from .upstreams import UpstreamUnavailable

log = logging.getLogger("angos.cache")

HIT, MISS, REVALIDATED, STALE, FAILED = "hit", "miss", "revalidated", "stale", "failed"
# Fills mirror the upstream: never refused as immutable, and blobs arrive later, when asked for.
FILL_POLICY = WritePolicy(immutable_tags=False, allow_missing_references=True)


@dataclass(frozen=True)
class Served:
    revision: Revision
    result: str
    warning: str | None = None  # why a stale copy was served


class ManifestCache:
    def __init__(self, registry, upstreams, on_fetched: Callable | None = None):
        """``on_fetched(repo_key, ns, digest, parsed)`` runs after a fetched manifest is stored."""
        self.registry = registry
        self.upstreams = upstreams
        self.on_fetched = on_fetched or (lambda *a: None)
        self._flight = SingleFlight()

    def get(self, repo_key: str, repo, ns: str, reference: str, may_fill: Callable[[], bool]) -> Served:
        manifests = self.registry.manifests
        if is_digest(reference):
            d = Digest.parse(reference)
            rev = manifests.revision(ns, d)
            if rev is not None:
                return Served(rev, HIT)
            return Served(self._fetch(repo_key, repo, ns, reference), MISS)
        rec = manifests.tag_record(ns, reference)
        rev = manifests.revision(ns, Digest.parse(rec.digest)) if rec is not None else None
        if rev is None:
            return Served(self._fetch(repo_key, repo, ns, reference), MISS)
        policy = self.registry.write_policy(ns)
        if immutable(reference, policy.immutable_tags, policy.immutable_exclusions):
            return Served(rev, HIT)
        return self._revalidate(repo_key, repo, ns, reference, rev, may_fill)

    # -- revalidation

    def _revalidate(self, repo_key, repo, ns, tag, rev: Revision, may_fill) -> Served:
        try:
            answer = self.upstreams.call(repo_key, repo, ns, "HEAD",
                                         lambda client, remote: client.head_manifest(remote, tag))
        except UpstreamUnavailable as exc:
            return self._stale(ns, tag, rev, f"upstream unreachable ({exc.message})")
        resp = answer.response
        resp.close()
        if resp.status_code != 200:
            return self._stale(ns, tag, rev, f"upstream {answer.where()} answered {resp.status_code}")
        if resp.headers.get("Docker-Content-Digest") == str(rev.digest):
            return Served(rev, REVALIDATED)
        if not may_fill():
            return self._stale(ns, tag, rev, "the upstream has other content and the access policy forbids "
                                             "fetching it (request.cache_fill)")
        try:
            fresh = self._fetch(repo_key, repo, ns, tag)
        except OciError as exc:
            return self._stale(ns, tag, rev, f"refreshing failed: {exc.message}")
        return Served(fresh, REVALIDATED if fresh.digest == rev.digest else MISS)

    @staticmethod
    def _stale(ns: str, tag: str, rev: Revision, why: str) -> Served:
        log.warning("serving cached %s:%s (%s) unchecked: %s", ns, tag, rev.digest, why)
        return Served(rev, STALE, why)

    # -- fetching

    def _fetch(self, repo_key: str, repo, ns: str, reference: str) -> Revision:
        return self._flight.do((ns, reference), lambda: self._fetch_once(repo_key, repo, ns, reference))

    def _fetch_once(self, repo_key: str, repo, ns: str, reference: str) -> Revision:
        limit = self.registry.manifests.max_manifest_size
        answer = self.upstreams.call(repo_key, repo, ns, "GET",
                                     lambda client, remote: client.get_manifest(remote, reference, stream=True))
        resp = answer.response
        try:
            if resp.status_code == 404:
                raise ManifestUnknown(f"manifest {ns}:{reference} is not cached and upstream {answer.where()} "
                                      f"does not have it")
            if resp.status_code != 200:
                raise BadGateway(f"upstream {answer.where()} answered {resp.status_code} to GET manifest {reference}")
            body = _read_bounded(resp, limit, answer)
            content_type = resp.headers.get("Content-Type")
            claimed = resp.headers.get("Docker-Content-Digest")
        finally:
            resp.close()
        m.CACHE_UPSTREAM_BYTES.labels(repo_key).inc(len(body))
        d = _verified_digest(body, reference, claimed, answer)
        try:
            parsed = parse_manifest(body, content_type)
            tags = None if is_digest(reference) else [reference]
            self.registry.manifests.put(ns, str(d), body, content_type, FILL_POLICY, tags, actor=CACHE_FILL)
        except (ManifestInvalid, DigestInvalid) as exc:
            raise BadGateway(f"upstream {answer.where()} sent an invalid manifest for {reference}: "
                             f"{exc.message}") from None
        rev = self.registry.manifests.revision(ns, d)
        if rev is None:  # deleted in the instant since: serve what was fetched
            rev = Revision(d, parsed.media_type, body, str(parsed.subject.digest) if parsed.subject else None)
        log.info("fetched manifest %s:%s (%s) from %s", ns, reference, d, answer.where())
        try:
            self.on_fetched(repo_key, ns, d, parsed)
        except Exception:  # noqa: BLE001 - background fills are an optimisation, never a failure
            log.exception("scheduling background fills for %s@%s failed", ns, d)
        return rev


def _read_bounded(resp, limit: int, answer) -> bytes:
    length = resp.headers.get("Content-Length")
    if (count(length) or 0) > limit:
        raise BadGateway(f"upstream {answer.where()} sent a manifest of {length} bytes, over max_manifest_size "
                         f"({limit})")
    parts, total = [], 0
    try:
        for block in resp.iter_content(64 * 1024):
            total += len(block)
            if total > limit:
                raise BadGateway(f"upstream {answer.where()} sent a manifest over max_manifest_size ({limit})")
            parts.append(block)
    except requests.RequestException as exc:
        raise BadGateway(f"reading a manifest from upstream {answer.where()} failed: {exc}") from None
    return b"".join(parts)


def _verified_digest(body: bytes, reference: str, claimed: str | None, answer) -> Digest:
    """The body's digest: it must be the reference (by digest) or what the upstream claimed (by tag)."""
    expected = reference if is_digest(reference) else claimed
    algorithm = "sha256"
    if expected:
        try:
            algorithm = Digest.parse(expected).algorithm
        except OciError:
            raise BadGateway(f"upstream {answer.where()} sent an invalid Docker-Content-Digest {expected!r}") from None
    actual = Digest.of(body, algorithm)
    if expected and str(actual) != expected:
        raise BadGateway(f"upstream {answer.where()} sent a manifest whose digest is {actual}, not {expected}")
    return actual
