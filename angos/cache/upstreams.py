"""The upstreams of a pull-through namespace, asked in order.

Role: map a local namespace to each configured upstream and send one request
with fallback. Mapping (:func:`upstream_namespace`): the repository part of the
name is replaced by the URL's path, as for replication's downstreams, and a
bare host has an empty path: ``<repo>/x`` → ``x`` on ``https://host``,
``team/x`` on ``https://host/team``; ``<repo>`` itself → ``team`` (or, on a
bare host, ``<repo>`` unchanged, since an empty name is not a name).

Contract of :meth:`Upstreams.call`: ``fn(client, remote_namespace)`` is tried
on each upstream of the namespace's repository in configuration order. The
next upstream is asked only when one cannot be reached (connect, TLS, stall
timeout, redirect loop: a :class:`~angos.remote.client.ClientError`) or
answers 5xx; any other answer (200, 404, 401, ...) is *the* answer and is
returned with the upstream that gave it. When every upstream failed,
:class:`UpstreamUnavailable` (503) names each one and why. Callers close the
responses they get.

One :class:`~angos.remote.client.RegistryClient` is kept per upstream table
(its token cache and connection pool), shared by every request of the process.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from .. import metrics as m
from ..oci.errors import Unavailable
from ..remote.client import ClientError, RegistryClient
from ..replication.mapping import Target, split_url

POOL = 32  # connections per upstream host and process: concurrent fills and revalidations


def upstream_namespace(repo_key: str, ns: str, url: str) -> Target:
    base, prefix = split_url(url)
    rest = ns[len(repo_key) + 1:] if ns != repo_key else ""
    if not rest:
        return Target(base, prefix or repo_key)
    return Target(base, f"{prefix}/{rest}" if prefix else rest)


class UpstreamUnavailable(Unavailable):
    """No upstream of the namespace could be reached (or each answered 5xx)."""


@dataclass(frozen=True)
class Answer:
    url: str            # the upstream's configured url (names it in errors and logs)
    remote: str         # the namespace on the upstream
    response: object    # the requests.Response

    def where(self) -> str:
        return f"{self.url} ({self.remote})"


class Upstreams:
    def __init__(self):
        self._clients: dict = {}
        self._lock = threading.Lock()

    def client(self, up, base_url: str) -> RegistryClient:
        key = (up, base_url)
        with self._lock:
            client = self._clients.get(key)
            if client is None:
                client = self._clients[key] = RegistryClient(base_url, up, pool=POOL)
            return client

    def call(self, repo_key: str, repo, ns: str, method: str, fn) -> Answer:
        reasons = []
        for up in repo.upstream:
            target = upstream_namespace(repo_key, ns, up.url)
            client = self.client(up, target.base_url)
            started = time.monotonic()
            try:
                resp = fn(client, target.namespace)
            except ClientError as exc:
                reasons.append(f"{up.url}: {exc}")
                continue
            finally:
                m.CACHE_UPSTREAM_DURATION.labels(repo_key, method).observe(time.monotonic() - started)
            if resp.status_code >= 500:
                reasons.append(f"{up.url}: {method} answered {resp.status_code}")
                resp.close()
                continue
            return Answer(up.url, target.namespace, resp)
        raise UpstreamUnavailable(f"no upstream of {repo_key!r} answered: " + "; ".join(reasons))
