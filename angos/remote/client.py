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
memory. Every method returns the ``requests.Response`` (or a small result)
and leaves classification of failures to the caller.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from urllib.parse import urlencode, urljoin

import requests
from requests.adapters import HTTPAdapter

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
        self.session.max_redirects = ds.max_redirect
        # Passed on every request: a session-level value would lose to REQUESTS_CA_BUNDLE
        # in the environment, silently ignoring the operator's server_ca_bundle.
        self.verify = ds.server_ca_bundle or True
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
        for the retry (a stream can only be sent once)."""
        for attempt in (0, 1):
            hdrs = dict(headers or {})
            hdrs.update(self._auth_header(scope))
            auth = (self.ds.username, self.ds.password) if (
                self._scheme == "basic" and self.ds.username is not None) else None
            data = body_factory() if body_factory is not None else None
            try:
                resp = self.session.request(method, url, headers=hdrs, data=data, auth=auth, verify=self.verify,
                                            timeout=self.timeout, allow_redirects=allow_redirects, stream=stream)
            except requests.TooManyRedirects as exc:
                raise ClientError(f"{method} {url}: more than {self.ds.max_redirect} redirects") from exc
            except requests.RequestException as exc:
                raise ClientError(f"{method} {url}: {exc}") from exc
            if resp.status_code != 401 or attempt == 1:
                return resp
            sent = hdrs.get("Authorization", "")
            if sent.startswith("Bearer ") and scope:
                self._rejected[scope] = sent[7:]  # expired or revoked: the next challenge refetches
            if not self._answer_challenge(resp.headers.get("WWW-Authenticate", ""), scope):
                return resp
            resp.close()
        return resp  # pragma: no cover - loop always returns

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
            resp = self.session.get(f"{realm}?{urlencode(query)}" if query else realm, auth=auth,
                                    verify=self.verify, timeout=self.timeout)
        except requests.RequestException as exc:
            raise ClientError(f"token request to {realm} failed: {exc}") from exc
        if resp.status_code != 200:
            log.warning("token endpoint %s answered %s for scope %s", realm, resp.status_code, wanted)
            return
        doc = resp.json()
        token = doc.get("token") or doc.get("access_token")
        if not token:
            return
        ttl = float(doc.get("expires_in") or 60)
        with self._lock:
            # Expire a little early so a token never dies mid-request.
            self._tokens[key] = (token, time.monotonic() + max(ttl - 5, 1))

    def ping(self, timeout: float) -> str | None:
        """One cheap request (``GET /v2/``, no auth round trip) with a short timeout: None when the
        remote answers as a registry would (any status but 5xx, 408 and 429), else why not."""
        try:
            with self.session.get(self.url(""), verify=self.verify, allow_redirects=False,
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
        url = self.url(f"{ns}/tags/list?n=1000")
        while url:
            resp = self.request("GET", url, self.scope(ns, "pull"))
            if resp.status_code == 404:
                return tags
            if resp.status_code != 200:
                raise ClientError(f"GET {url}: {resp.status_code}")
            tags.extend(resp.json().get("tags") or [])
            nxt = resp.links.get("next", {}).get("url")
            url = urljoin(url, nxt) if nxt else None
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
