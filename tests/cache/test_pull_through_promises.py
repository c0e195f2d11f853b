"""Promises of docs/pull-through.md that no other test checked:

- a blob another cached namespace stored is shared only when one of the asking namespace's own
  cached manifests lists it, or its own upstream confirms it with a HEAD ("Blobs");
- credentials are never sent to the target of a redirect ("never sends your credentials to the CDN");
- a 404 from the first upstream is final: the next one is not asked ("Upstream options");
- a blob over ``max_blob_size``, a manifest that is not JSON and a Docker schema 1 manifest are
  refused with a 502 and nothing of them is stored ("Limits and safeguards").

Everything runs on 127.0.0.1: Distribution upstreams behind the counting :class:`.proxy.Proxy`,
and, where Distribution cannot play the part (a CDN, an upstream that sends a bad manifest or a
body with no length), :class:`tests.scripted.Scripted` servers.
"""

from __future__ import annotations

import hashlib
import json
import os
import re

import pytest
import requests

from angos.oci.digest import Digest
from angos.registry import paths

from ..conftest import wait_for
from .conftest import MANIFEST_ACCEPT, cache_config, cache_counts, pull, push, push_blob, stored_blobs
from .proxy import Proxy

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
SCHEMA1 = "application/vnd.docker.distribution.manifest.v1+json"


class RedirectingProxy(Proxy):
    """:class:`Proxy` in front of a registry that, like Docker Hub, sends blob downloads to a CDN:
    a blob GET carrying credentials is answered with a 307 to ``<cdn>/cdn/<digest>``, and records
    the Authorization it carried. A blob GET without credentials is forwarded, so the registry's
    401 challenge reaches the cache as it would in production."""

    BLOB = re.compile(r"/blobs/(sha256:[0-9a-f]{64})$")

    def __init__(self, target: str, cdn: str):
        self.cdn = cdn
        self.redirected: list[tuple[str, str]] = []  # (digest, Authorization sent to the registry)
        super().__init__(target)

    def _handler(self):
        base = super()._handler()
        proxy = self

        class Handler(base):
            def _relay(self):
                path = self.path.split("?", 1)[0]
                m = proxy.BLOB.search(path)
                auth = self.headers.get("Authorization")
                if self.command == "GET" and m and auth:
                    with proxy._lock:
                        proxy.counts[(self.command, path)] += 1
                        proxy.redirected.append((m.group(1), auth))
                    self.send_response(307)
                    self.send_header("Location", f"{proxy.cdn}/cdn/{m.group(1)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                base._relay(self)

            do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _relay

        return Handler


@pytest.fixture
def redirecting_proxies():
    made: list[RedirectingProxy] = []

    def make(target: str, cdn: str) -> RedirectingProxy:
        made.append(RedirectingProxy(target, cdn).start())
        return made[-1]

    yield make
    for proxy in made:
        proxy.stop()


def _upstream(scripted):
    """A scripted upstream that answers ``GET /v2/`` as a registry does."""
    up = scripted()
    up.route("GET", "/v2/", b"{}", {"Content-Type": "application/json"})
    return up


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _grant(cache, ns: str, digest: str):
    """The file of ``ns``'s ownership grant of a blob (the metadata store shares the fs root)."""
    return cache.workdir / "data" / paths.grant(ns, Digest.parse(digest))


def _two_repositories(first: str, second: str, extra: str = "") -> str:
    """``hub`` pulls through ``first``; ``other`` pulls through ``second``."""
    return cache_config({"url": first}, extra=(
        f'\n[repository."other"]\n\n[[repository."other".upstream]]\nurl = "{second}"\n' + extra))


def _nothing_left(cache) -> None:
    data = cache.workdir / "data"
    assert not list((data / "uploads").glob("*/data")), "an upload session was left behind"
    assert not list((data / "fills").glob("*/*")), "a fill record was left behind"


# -- 1. blobs shared between cached namespaces


def test_blob_another_cached_namespace_stored_is_unknown_when_neither_a_manifest_nor_the_upstream_vouches(
        angos_factory, docker_registry_factory, proxy_factory):
    has, lacks = docker_registry_factory(), docker_registry_factory()
    blob = os.urandom(256 * 1024)
    d = push_blob(has.url, "library/app", blob)
    near, far = proxy_factory(has.url), proxy_factory(lacks.url)
    cache = angos_factory(config_text=_two_repositories(near.url, far.url))

    r = requests.get(cache.v2(f"hub/library/app/blobs/{d}"))
    assert r.status_code == 200 and r.content == blob
    assert wait_for(lambda: d in stored_blobs(cache), timeout=10)
    assert _grant(cache, "hub/library/app", d).is_file()  # where grants live: the negative below is meaningful

    # 'other' has no manifest listing the blob and its upstream does not have it: the stored bytes
    # are not its to read, by GET or HEAD, however often it asks.
    for _ in range(2):
        r = requests.get(cache.v2(f"other/library/app/blobs/{d}"))
        assert r.status_code == 404, (r.status_code, r.content[:200])
        assert r.json()["errors"][0]["code"] == "BLOB_UNKNOWN"
        assert blob not in r.content
    r = requests.head(cache.v2(f"other/library/app/blobs/{d}"))
    assert r.status_code == 404
    # Its own upstream was asked to confirm, and said no.
    assert far.count("HEAD", f"/blobs/{d}$") >= 1
    assert not _grant(cache, "other/library/app", d).exists()
    assert cache_counts(cache).get(("other", "blob", "hit"), 0) == 0


def test_blob_another_cached_namespace_stored_is_shared_when_its_upstream_confirms_with_a_head(
        angos_factory, upstream, proxy_factory):
    blob = os.urandom(256 * 1024)
    d = push_blob(upstream.url, "library/app", blob)
    near, far = proxy_factory(upstream.url), proxy_factory(upstream.url)
    cache = angos_factory(config_text=_two_repositories(near.url, far.url))
    assert requests.get(cache.v2(f"hub/library/app/blobs/{d}")).status_code == 200
    assert wait_for(lambda: d in stored_blobs(cache), timeout=10)

    r = requests.get(cache.v2(f"other/library/app/blobs/{d}"))
    assert r.status_code == 200 and r.content == blob
    # One HEAD confirmed it; the bytes were not downloaded a second time.
    assert far.count("HEAD", f"/blobs/{d}$") == 1
    assert far.count("GET", f"/blobs/{d}$") == 0
    assert cache_counts(cache)[("other", "blob", "hit")] == 1


def test_blob_another_cached_namespace_stored_is_shared_when_an_own_cached_manifest_lists_it(
        angos_factory, upstream, proxy_factory, image):
    push(image, upstream.host, "library/app:v1")
    near, far = proxy_factory(upstream.url), proxy_factory(upstream.url)
    # 'other's upstream serves the manifest but answers 404 for every blob: only the manifest can vouch.
    far.fault("/blobs/", status=404)
    cache = angos_factory(config_text=_two_repositories(near.url, far.url))
    d = image.blobs[-1]
    assert requests.get(cache.v2(f"hub/library/app/blobs/{d}")).status_code == 200
    assert wait_for(lambda: d in stored_blobs(cache), timeout=10)

    r = requests.get(cache.v2("other/library/app/manifests/v1"), headers={"Accept": MANIFEST_ACCEPT})
    assert r.status_code == 200
    # Before background fills (due seconds later) could have granted it: this read is what decides.
    assert not _grant(cache, "other/library/app", d).exists()
    r = requests.get(cache.v2(f"other/library/app/blobs/{d}"))
    assert r.status_code == 200 and r.headers["Docker-Content-Digest"] == d
    assert _sha(r.content) == d
    assert far.count("HEAD", "/blobs/") == 0 and far.count("GET", "/blobs/") == 0


# -- 2. credentials and redirects


def test_credentials_are_not_sent_to_the_redirect_target_of_a_blob_download(
        angos_factory, docker_registry_factory, scripted, redirecting_proxies, image, tmp_path):
    dist = docker_registry_factory(users={"mirror": "s3cret"})
    push(image, dist.host, "library/app:v1", "mirror:s3cret")
    # The "CDN": another port of 127.0.0.1, serving each blob's bytes to anyone.
    cdn = scripted()
    for d in image.blobs:
        cdn.route("GET", f"/cdn/{d}", (image.layout / "blobs" / "sha256" / d.split(":")[1]).read_bytes(),
                  {"Content-Type": "application/octet-stream"})
    front = redirecting_proxies(dist.url, cdn.url)
    cache = angos_factory(config_text=cache_config({"url": front.url, "username": "mirror", "password": "s3cret"}))

    pull(cache.host, "hub/library/app:v1", tmp_path / "out")
    assert json.loads((tmp_path / "out" / "index.json").read_text())["manifests"][0]["digest"] == image.digest
    # Every blob was sent to the CDN by the registry (with the cache's credentials on that request)...
    assert {d for d, _ in front.redirected} == set(image.blobs)
    assert all(auth.startswith("Basic ") for _, auth in front.redirected)
    # ...and downloaded from it, never with an Authorization header.
    for d in image.blobs:
        assert cdn.requests_for("GET", f"/cdn/{d}$"), d
    sent = [(m, p, h) for m, p, h in cdn.seen if p.startswith("/cdn/")]
    assert sent
    assert not [(m, p) for m, p, h in sent if any(k.lower() == "authorization" for k in h)], sent


# -- 3. a 404 is final


def test_a_404_from_the_first_upstream_is_final_and_the_next_is_never_asked(
        angos_factory, docker_registry_factory, proxy_factory, image):
    empty, full = docker_registry_factory(), docker_registry_factory()
    push(image, full.host, "library/app:v1")
    first, second = proxy_factory(empty.url), proxy_factory(full.url)
    cache = angos_factory(config_text=cache_config({"url": first.url}, {"url": second.url}))
    d = image.blobs[0]

    r = requests.get(cache.v2("hub/library/app/manifests/v1"), headers={"Accept": MANIFEST_ACCEPT})
    assert r.status_code == 404 and r.json()["errors"][0]["code"] == "MANIFEST_UNKNOWN"
    assert first.url in r.json()["errors"][0]["message"]
    r = requests.get(cache.v2(f"hub/library/app/manifests/{image.digest}"), headers={"Accept": MANIFEST_ACCEPT})
    assert r.status_code == 404 and r.json()["errors"][0]["code"] == "MANIFEST_UNKNOWN"
    r = requests.get(cache.v2(f"hub/library/app/blobs/{d}"))
    assert r.status_code == 404 and r.json()["errors"][0]["code"] == "BLOB_UNKNOWN"
    assert requests.head(cache.v2(f"hub/library/app/blobs/{d}")).status_code == 404
    # The first upstream answered each of them; the second heard nothing at all.
    assert first.count("GET", "/manifests/v1$") == 1 and first.count("GET", f"/blobs/{d}$") == 1
    assert sum(second.counts.values()) == 0, dict(second.counts)

    # The second upstream is wired and counted: a 5xx from the first does fall back to it.
    first.fault("/manifests/v1$", status=503)
    r = requests.get(cache.v2("hub/library/app/manifests/v1"), headers={"Accept": MANIFEST_ACCEPT})
    assert r.status_code == 200 and r.headers["Docker-Content-Digest"] == image.digest
    assert second.count("GET", "/manifests/v1$") == 1


# -- 4. content refused by size or format


def test_blob_over_max_blob_size_is_a_502_and_not_stored(angos_factory, upstream, proxy_factory):
    big, small = os.urandom(200 * 1024), os.urandom(10 * 1024)
    d, ok = push_blob(upstream.url, "library/app", big), push_blob(upstream.url, "library/app", small)
    proxy = proxy_factory(upstream.url)
    cache = angos_factory(config_text=cache_config({"url": proxy.url}, extra='[global]\nmax_blob_size = "64KiB"\n'))

    # Under the limit: served and stored (the limit is what refuses the other one).
    r = requests.get(cache.v2(f"hub/library/app/blobs/{ok}"))
    assert r.status_code == 200 and r.content == small

    r = requests.get(cache.v2(f"hub/library/app/blobs/{d}"))
    assert r.status_code == 502, (r.status_code, r.content[:200])
    assert "max_blob_size" in r.json()["errors"][0]["message"]
    assert d not in stored_blobs(cache) and not _grant(cache, "hub/library/app", d).exists()
    _nothing_left(cache)
    # Not cached: a HEAD is answered by asking the upstream, and the next GET fetches (and refuses) again.
    heads = proxy.count("HEAD", f"/blobs/{d}$")
    assert requests.head(cache.v2(f"hub/library/app/blobs/{d}")).status_code == 200
    assert proxy.count("HEAD", f"/blobs/{d}$") == heads + 1
    assert requests.get(cache.v2(f"hub/library/app/blobs/{d}")).status_code == 502
    assert proxy.count("GET", f"/blobs/{d}$") == 2
    assert d not in stored_blobs(cache)
    assert cache_counts(cache)[("hub", "blob", "failed")] == 2


def test_blob_over_max_blob_size_sent_without_a_length_is_a_502_and_not_stored(angos_factory, scripted):
    # No Content-Length to refuse up front: the limit must stop the body as it is written.
    big = os.urandom(200 * 1024)
    d = _sha(big)
    upstream = _upstream(scripted)
    upstream.route("GET", f"/v2/library/app/blobs/{d}", big, {"Content-Type": "application/octet-stream"},
                   chunked=True)
    cache = angos_factory(config_text=cache_config({"url": upstream.url},
                                                   extra='[global]\nmax_blob_size = "64KiB"\n'))
    r = requests.get(cache.v2(f"hub/library/app/blobs/{d}"))
    assert r.status_code == 502, (r.status_code, r.content[:200])
    assert "max_blob_size" in r.json()["errors"][0]["message"]
    assert len(upstream.requests_for("GET", f"/blobs/{d}$")) == 1  # it was fetched, then refused
    assert d not in stored_blobs(cache) and not _grant(cache, "hub/library/app", d).exists()
    _nothing_left(cache)


@pytest.mark.parametrize("body, content_type, why", [
    (b'{"schemaVersion": 2, "mediaType": "' + OCI_MANIFEST.encode() + b'", "config": ',
     OCI_MANIFEST, "not valid JSON"),
    (json.dumps({"schemaVersion": 1, "name": "library/app", "tag": "v1", "architecture": "amd64",
                 "fsLayers": [], "history": []}).encode(), SCHEMA1, "schema1"),
], ids=["invalid-json", "docker-schema1"])
def test_manifest_a_push_would_refuse_is_a_502_and_not_stored(angos_factory, scripted, body, content_type, why):
    d = _sha(body)
    upstream = _upstream(scripted)
    headers = {"Content-Type": content_type, "Docker-Content-Digest": d}
    for ref in ("v1", d):
        upstream.route("GET", f"/v2/library/app/manifests/{ref}", body, headers)
    cache = angos_factory(config_text=cache_config({"url": upstream.url}))

    r = requests.get(cache.v2("hub/library/app/manifests/v1"), headers={"Accept": MANIFEST_ACCEPT})
    assert r.status_code == 502, (r.status_code, r.content[:200])
    message = r.json()["errors"][0]["message"]
    assert upstream.url in message and why in message, message
    # Nothing stored: no tag, no revision (a by-digest read goes upstream again, and is refused again).
    assert requests.get(cache.v2("hub/library/app/tags/list")).status_code == 404
    r = requests.get(cache.v2(f"hub/library/app/manifests/{d}"), headers={"Accept": MANIFEST_ACCEPT})
    assert r.status_code == 502
    assert len(upstream.requests_for("GET", f"/manifests/{d}$")) == 1
    assert d not in stored_blobs(cache)
    assert not (cache.workdir / "data" / "repositories" / "hub").exists()
