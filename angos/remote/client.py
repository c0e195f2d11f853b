"""The outbound OCI registry client (``requests``), for replication's downstreams and
pull-through's upstreams alike.

One :class:`RegistryClient` per configured remote holds a pooled session with
the remote's TLS settings (``server_ca_bundle``, client certificate), redirect
limit and timeouts, taken from its configuration table (a ``Downstream`` or an
``Upstream``: anything with ``username``, ``password``, ``max_redirect``,
``server_ca_bundle``, ``client_certificate``, ``client_private_key``,
``connect_timeout_secs`` and ``read_timeout_secs``). Authentication is negotiated from
the challenge: ``Basic`` sends the configured credentials; ``Bearer`` runs the
registry token flow (GET the realm with service + scope, using the credentials
when present) and caches each token per scope until it expires.

Blob bodies are streamed from a file object; nothing is read whole into
memory. What the remote sends back is bounded too, since a hostile or broken
remote controls it: a body asked for with ``stream=True`` is left unread for
the caller to bound; any other answer is read up to :data:`MAX_BODY` bytes
(a token answer up to :data:`MAX_TOKEN_BODY`), and a longer one is a
:class:`ClientError`. Redirects are followed here, up to ``max_redirect``,
without reading the redirect answers' bodies (``requests`` reads each one
whole, even when told not to follow it: :mod:`.unread`), and credentials go
only to the origin they were configured for.
Listings follow at most :data:`MAX_PAGES` pages. Every method returns the
``requests.Response`` (or a small result) and leaves classification of
failures to the caller.

The environment's HTTP settings (``HTTP_PROXY``/``HTTPS_PROXY``/``NO_PROXY``,
``REQUESTS_CA_BUNDLE``/``CURL_CA_BUNDLE``) apply as they would with plain
``requests``, but are read once per client and origin instead of on every
request; ``~/.netrc`` is never consulted (credentials come from the
configuration only).
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from typing import Iterator
from urllib.parse import urlencode, urljoin, urlsplit

import requests
from requests.adapters import HTTPAdapter

from .unread import send

log = logging.getLogger("angos.remote.client")

SOURCE_TS = "X-Angos-Source-Timestamp"
SOURCE_INSTANCE = "X-Angos-Source-Instance"  # where a replicated write was authored (sent with SOURCE_TS)
MANIFEST_ACCEPT = ", ".join([
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
])
_CHALLENGE_PARAM = re.compile(r'(\w+)="([^"]*)"')
MAX_BODY = 16 * 1024 * 1024       # an answer read whole: a manifest, an error, a page of a listing
MAX_TOKEN_BODY = 1024 * 1024      # a token endpoint's answer (a few KiB in practice)
MAX_PAGES = 10_000                # pages of one listing (10 million tags at 1000 a page)
_REDIRECTS = (301, 302, 303, 307, 308)


class ClientError(Exception):
    """A transport-level failure talking to the remote (connect, TLS, timeout, redirect loop)."""


class _StreamBody:
    """A file-like body that requests streams in large blocks with a known length."""

    def __init__(self, fh, length: int, block: int = 1 << 20):
        self.fh = fh
        self.len = length
        self.block = block

    def __iter__(self):
        remaining = self.len
        while remaining > 0:
            data = self.fh.read(min(self.block, remaining))
            if not data:
                return
            remaining -= len(data)
            yield data


class RegistryClient:
    def __init__(self, base_url: str, ds, pool: int = 8):
        """``ds`` is the remote's configuration table; ``pool`` the connections kept per host."""
        self.base_url = base_url.rstrip("/")
        self.ds = ds
        self.session = requests.Session()
        adapter = HTTPAdapter(pool_connections=4, pool_maxsize=pool, max_retries=0)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        # Plain bodies: a compressed answer read "up to N bytes" could still inflate far beyond N.
        self.session.headers["Accept-Encoding"] = "identity"
        # requests would read the environment on every request: scan all of it twice for proxy
        # settings and stat ~/.netrc (profiled: ~1.5 ms of CPU per scan with 40 variables set). The
        # client reads it once instead (_proxies), and credentials come from the configuration only.
        self.session.trust_env = False
        # The operator's server_ca_bundle first, then the environment's bundle, as requests would.
        self.verify = (ds.server_ca_bundle or os.environ.get("REQUESTS_CA_BUNDLE")
                       or os.environ.get("CURL_CA_BUNDLE") or True)
        self._env_proxies: dict[tuple, dict] = {}  # origin -> the environment's proxies for it
        if ds.client_certificate:
            self.session.cert = (ds.client_certificate, ds.client_private_key)
        self.timeout = (ds.connect_timeout_secs, ds.read_timeout_secs)
        self._scheme: str | None = None      # "basic" or "bearer" once a challenge was seen
        self._bearer: dict | None = None     # realm/service from the last Bearer challenge
        self._tokens: dict[str, tuple[str, float]] = {}
        self._rejected: dict[str, str] = {}  # scope -> a token the remote refused (so refetch)
        self._lock = threading.Lock()
        self._fetching = threading.Lock()

    # ------------------------------------------------------------------ plumbing

    def url(self, path: str) -> str:
        return f"{self.base_url}/v2/{path}"

    def _proxies(self, url: str) -> dict:
        """The environment's proxies for ``url``'s origin (none when ``NO_PROXY`` exempts it)."""
        origin = _origin(url)
        found = self._env_proxies.get(origin)
        if found is None:
            if len(self._env_proxies) >= 64:  # redirects may name any host: keep the memo small
                self._env_proxies.clear()
            found = self._env_proxies[origin] = requests.utils.get_environ_proxies(url)
        return found

    def _auth_header(self, scope: str | None) -> dict:
        if self._scheme == "basic" and self.ds.username is not None:
            return {}  # requests adds it via auth=
        if self._scheme == "bearer" and scope:
            with self._lock:
                tok = self._tokens.get(scope)
            if tok and tok[1] > time.monotonic():
                return {"Authorization": f"Bearer {tok[0]}"}
        return {}

    def request(self, method: str, url: str, scope: str | None = None, headers: dict | None = None,
                body_factory=None, allow_redirects: bool = True, stream: bool = False) -> requests.Response:
        """Send a request, answering one auth challenge if needed. ``body_factory`` rebuilds the body
        for the retry (a stream can only be sent once). Without ``stream`` the answer's body has been
        read (at most MAX_BODY bytes); with it, the caller reads ``resp.raw`` and closes it."""
        for attempt in (0, 1):
            hdrs = dict(headers or {})
            hdrs.update(self._auth_header(scope))
            auth = (self.ds.username, self.ds.password) if (
                self._scheme == "basic" and self.ds.username is not None) else None
            resp = self._send(method, url, hdrs, body_factory, auth, allow_redirects)
            if resp.status_code != 401 or attempt == 1:
                return resp if stream else _buffered(resp, MAX_BODY)
            sent = hdrs.get("Authorization", "")
            if sent.startswith("Bearer ") and scope:
                self._rejected[scope] = sent[7:]  # expired or revoked: the next challenge refetches
            if not self._answer_challenge(resp.headers.get("WWW-Authenticate", ""), scope):
                return resp if stream else _buffered(resp, MAX_BODY)
            resp.close()
        return resp  # pragma: no cover - loop always returns

    def _send(self, method: str, url: str, headers: dict, body_factory, auth, allow_redirects: bool = True,
              timeout=None) -> requests.Response:
        """One request, following redirects (at most ``max_redirect``) like ``requests`` would, but
        closing each redirect answer unread; the final answer's body is left unread."""
        first_host = _origin(url)
        for _ in range(self.ds.max_redirect + 1):
            data = body_factory() if body_factory is not None else None
            try:
                resp = send(self.session, method, url, headers=headers, data=data, auth=auth, verify=self.verify,
                            timeout=timeout or self.timeout, proxies=self._proxies(url))
            except requests.RequestException as exc:
                raise ClientError(f"{method} {url}: {exc}") from exc
            location = resp.headers.get("Location")
            if not allow_redirects or resp.status_code not in _REDIRECTS or not location:
                return resp
            resp.close()  # unread: a redirect's body is of no use, and its size is the remote's choice
            url = urljoin(url, location)
            if resp.status_code == 303 and method != "HEAD" or resp.status_code in (301, 302) and method == "POST":
                method, body_factory = "GET", None
            if _origin(url) != first_host:
                # Credentials are for the configured remote, never for where it sends us (object storage).
                headers = {k: v for k, v in headers.items() if k.lower() != "authorization"}
                auth = None
        raise ClientError(f"{method} {url}: more than {self.ds.max_redirect} redirects")

    def pages(self, url: str, scope: str | None) -> Iterator[requests.Response]:
        """The answers of a paginated listing from ``url``, following ``Link: <...>; rel="next"``;
        stops after an answer that is not a 200 or names no next page. ClientError after MAX_PAGES
        pages, or when a page names itself as the next."""
        for _ in range(MAX_PAGES):
            resp = self.request("GET", url, scope)
            yield resp
            if resp.status_code != 200:
                return
            nxt = resp.links.get("next", {}).get("url")
            if not nxt:
                return
            nxt = urljoin(url, nxt)
            if nxt == url:
                raise ClientError(f"GET {url}: the next page is the same page")
            url = nxt
        raise ClientError(f"GET {url}: more than {MAX_PAGES} pages")

    def _answer_challenge(self, header: str, scope: str | None) -> bool:
        kind = header.split(" ", 1)[0].lower()
        if kind == "basic":
            if self.ds.username is None:
                return False
            self._scheme = "basic"
            return True
        if kind == "bearer":
            params = dict(_CHALLENGE_PARAM.findall(header))
            realm = params.get("realm")
            if not realm:
                return False
            self._scheme = "bearer"
            wanted = params.get("scope") or scope
            self._fetch_token(realm, params.get("service"), wanted, scope)
            return True
        return False

    def _fetch_token(self, realm: str, service: str | None, wanted: str | None, cache_scope: str | None) -> None:
        # One fetch per scope at a time: parallel blob pushes that all meet the same
        # challenge wait for the first token instead of each asking for their own.
        with self._fetching:
            key = cache_scope or wanted or ""
            with self._lock:
                cached = self._tokens.get(key)
            if cached and cached[1] > time.monotonic() and cached[0] != self._rejected.get(key):
                return
            self._fetch_token_locked(realm, service, wanted, key)

    def _fetch_token_locked(self, realm: str, service: str | None, wanted: str | None, key: str) -> None:
        query = {}
        if service:
            query["service"] = service
        if wanted:
            query["scope"] = wanted
        auth = (self.ds.username, self.ds.password) if self.ds.username is not None else None
        try:
            resp = _buffered(self._send("GET", f"{realm}?{urlencode(query)}" if query else realm, {}, None, auth),
                             MAX_TOKEN_BODY)
        except ClientError as exc:
            raise ClientError(f"token request to {realm} failed: {exc}") from exc
        if resp.status_code != 200:
            log.warning("token endpoint %s answered %s for scope %s", realm, resp.status_code, wanted)
            return
        try:
            doc = resp.json()
            token = doc.get("token") or doc.get("access_token")
            ttl = float(doc.get("expires_in") or 60)
        except (ValueError, AttributeError, TypeError, RecursionError):
            log.warning("token endpoint %s answered something that is not a token", realm)
            return
        if not token or not isinstance(token, str):
            return
        with self._lock:
            # Expire a little early so a token never dies mid-request.
            self._tokens[key] = (token, time.monotonic() + max(ttl - 5, 1))

    def ping(self, timeout: float) -> str | None:
        """One cheap request (``GET /v2/``, no auth round trip) with a short timeout: None when the
        remote answers as a registry would (any status but 5xx, 408 and 429), else why not."""
        try:
            with send(self.session, "GET", self.url(""), verify=self.verify,
                      timeout=(min(self.timeout[0], timeout), timeout)) as resp:
                if resp.status_code >= 500 or resp.status_code in (408, 429):
                    return f"GET /v2/ answered {resp.status_code}"
                return None
        except requests.RequestException as exc:
            return f"GET /v2/: {exc}"

    @staticmethod
    def scope(namespace: str, actions: str = "pull,push") -> str:
        return f"repository:{namespace}:{actions}"

    # ------------------------------------------------------------------ manifests

    def head_manifest(self, ns: str, reference: str) -> requests.Response:
        return self.request("HEAD", self.url(f"{ns}/manifests/{reference}"), self.scope(ns, "pull"),
                            {"Accept": MANIFEST_ACCEPT})

    def get_manifest(self, ns: str, reference: str, stream: bool = False) -> requests.Response:
        """``stream=True`` leaves the body unread, for a caller that bounds what it reads."""
        return self.request("GET", self.url(f"{ns}/manifests/{reference}"), self.scope(ns, "pull"),
                            {"Accept": MANIFEST_ACCEPT}, stream=stream)

    def put_manifest(self, ns: str, reference: str, body: bytes, media_type: str,
                     source_ts: str | None, origin: str | None = None) -> requests.Response:
        headers = {"Content-Type": media_type}
        if source_ts:
            headers[SOURCE_TS] = source_ts
            if origin:
                headers[SOURCE_INSTANCE] = origin
        return self.request("PUT", self.url(f"{ns}/manifests/{reference}"), self.scope(ns), headers,
                            body_factory=lambda: body)

    def delete_manifest(self, ns: str, reference: str, source_ts: str | None,
                        origin: str | None = None) -> requests.Response:
        headers = {SOURCE_TS: source_ts} if source_ts else {}
        if source_ts and origin:
            headers[SOURCE_INSTANCE] = origin
        return self.request("DELETE", self.url(f"{ns}/manifests/{reference}"), self.scope(ns, "*"), headers)

    def referrers(self, ns: str, digest: str) -> requests.Response:
        return self.request("GET", self.url(f"{ns}/referrers/{digest}"), self.scope(ns, "pull"))

    def list_tags(self, ns: str) -> list[str]:
        """Every tag on the remote, following ``Link`` pagination. Raises ClientError on failure."""
        tags: list[str] = []
        for resp in self.pages(self.url(f"{ns}/tags/list?n=1000"), self.scope(ns, "pull")):
            if resp.status_code == 404:
                return tags
            if resp.status_code != 200:
                raise ClientError(f"GET {resp.url}: {resp.status_code}")
            try:
                tags.extend(resp.json().get("tags") or [])
            except (ValueError, AttributeError, TypeError, RecursionError):
                raise ClientError(f"GET {resp.url}: not a tag list") from None
        return tags

    # ------------------------------------------------------------------ blobs

    def head_blob(self, ns: str, digest: str) -> bool:
        return self.head_blob_response(ns, digest).status_code == 200

    def head_blob_response(self, ns: str, digest: str) -> requests.Response:
        return self.request("HEAD", self.url(f"{ns}/blobs/{digest}"), self.scope(ns, "pull"))

    def get_blob(self, ns: str, digest: str) -> requests.Response:
        """A streamed blob GET (redirects to object storage followed up to ``max_redirect``); the
        caller reads ``resp.raw`` and closes it. ``identity`` so the bytes are exactly the blob's."""
        return self.request("GET", self.url(f"{ns}/blobs/{digest}"), self.scope(ns, "pull"),
                            {"Accept-Encoding": "identity"}, stream=True)

    def mount_or_start(self, ns: str, digest: str, source: str | None) -> tuple[bool, str | None]:
        """Try a cross-repository mount; returns (mounted, upload location if a session was opened)."""
        if source:
            query = urlencode({"mount": digest, "from": source})
            scope = f"{self.scope(ns)} repository:{source}:pull"
        else:
            query, scope = "", self.scope(ns)
        resp = self.request("POST", self.url(f"{ns}/blobs/uploads/") + (f"?{query}" if query else ""), scope,
                            {"Content-Length": "0"})
        if source and resp.status_code in (401, 403):
            # May upload but not mount (or not read the source): an ordinary upload does the same.
            resp.close()
            return self.mount_or_start(ns, digest, None)
        if resp.status_code == 201:
            return True, None
        if resp.status_code == 202 and resp.headers.get("Location"):
            return False, urljoin(self.url(f"{ns}/blobs/uploads/"), resp.headers["Location"])
        raise ClientError(f"starting an upload on {ns} answered {resp.status_code}: {resp.text[:200]}")

    def upload_blob(self, ns: str, location: str, digest: str, size: int, open_blob) -> requests.Response:
        """Close an upload session with the whole blob streamed in one PUT."""
        sep = "&" if "?" in location else "?"
        url = f"{location}{sep}digest={digest}"
        state = {}

        def body():
            if "fh" in state:
                state["fh"].close()
            state["fh"] = open_blob()
            return _StreamBody(state["fh"], size)

        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(size)}
        try:
            return self.request("PUT", url, self.scope(ns), headers, body_factory=body)
        finally:
            if "fh" in state:
                state["fh"].close()


def _origin(url: str) -> tuple:
    parts = urlsplit(url)
    return parts.scheme, parts.hostname, parts.port


def _buffered(resp: requests.Response, limit: int) -> requests.Response:
    """``resp`` with its body read (so ``.json()``, ``.text`` and ``.content`` work), or ClientError
    when the body is longer than ``limit`` bytes (nothing more is read)."""
    try:
        # Read even a HEAD answer (to its empty end): that is what lets its connection be reused.
        data = resp.raw.read(limit + 1, decode_content=True)
    except Exception as exc:  # noqa: BLE001 - urllib3 read errors, as requests would raise them
        resp.close()
        raise ClientError(f"{resp.request.method} {resp.url}: {exc}") from None
    if len(data) > limit:
        resp.close()
        raise ClientError(f"{resp.request.method} {resp.url}: the answer is longer than {limit} bytes")
    # What requests itself sets once it has read a body: later reads use these bytes.
    resp._content, resp._content_consumed = data, True
    resp.close()  # the body was read to its end: this returns the connection to the pool
    return resp
