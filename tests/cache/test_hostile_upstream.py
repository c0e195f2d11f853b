"""A hostile upstream: wrong digest, truncated body, oversized manifest, redirect loop and a slow
drip past the stall timeout. Each is a clean error for the client (an OCI error before the
response starts, or a response cut short before its last byte once it has), and nothing of it is
stored: no blob, no upload session, no fill record, no manifest. The next request tries again."""

from __future__ import annotations

import os

import pytest
import requests

from .conftest import MANIFEST_ACCEPT, cache_config, push, push_blob, stored_blobs


def _nothing_left(cache, digest: str | None = None) -> None:
    data = cache.workdir / "data"
    if digest is not None:
        assert digest not in stored_blobs(cache)
    assert not list((data / "uploads").glob("*/data")), "an upload session was left behind"
    assert not list((data / "fills").glob("*/*")), "a fill record was left behind"


def _cut_short(url: str) -> bool:
    """GET ``url``: True when the body ends before its Content-Length (the connection was cut)."""
    try:
        with requests.get(url, stream=True, timeout=30) as r:
            assert r.status_code == 200, r.text
            for _ in r.iter_content(1 << 16):
                pass
    except (requests.exceptions.ChunkedEncodingError, requests.exceptions.ConnectionError):
        return True
    return False


@pytest.fixture
def hostile(angos_factory, upstream, proxy_factory):
    proxy = proxy_factory(upstream.url)

    def make(extra: str = "", **upstream_options):
        return angos_factory(config_text=cache_config({"url": proxy.url, **upstream_options}, extra=extra))

    return upstream, proxy, make


def test_blob_with_wrong_digest_is_cut_short_and_not_stored(hostile):
    upstream, proxy, make = hostile
    d = push_blob(upstream.url, "library/app", os.urandom(3 * 1024 * 1024))
    proxy.fault(f"/blobs/{d}$", corrupt=True)
    cache = make()
    assert _cut_short(cache.v2(f"hub/library/app/blobs/{d}"))
    _nothing_left(cache, d)
    assert "does not match" in cache.logs()

    proxy.clear()  # the upstream heals: the next request fetches again and succeeds
    r = requests.get(cache.v2(f"hub/library/app/blobs/{d}"))
    assert r.status_code == 200 and r.headers["Docker-Content-Digest"] == d
    assert proxy.count("GET", f"/blobs/{d}$") == 2


def test_truncated_blob_is_cut_short_and_not_stored(hostile):
    upstream, proxy, make = hostile
    d = push_blob(upstream.url, "library/app", os.urandom(2 * 1024 * 1024))
    proxy.fault(f"/blobs/{d}$", truncate=1024 * 1024)
    cache = make()
    assert _cut_short(cache.v2(f"hub/library/app/blobs/{d}"))
    _nothing_left(cache, d)


def test_manifest_with_wrong_digest_is_refused(hostile, image):
    upstream, proxy, make = hostile
    push(image, upstream.host, "library/app:v1")
    proxy.fault("/manifests/", corrupt=True)
    cache = make()
    r = requests.get(cache.v2("hub/library/app/manifests/v1"), headers={"Accept": MANIFEST_ACCEPT})
    assert r.status_code == 502 and "digest" in r.json()["errors"][0]["message"]
    assert requests.get(cache.v2("hub/library/app/tags/list")).status_code == 404


def test_oversized_manifest_is_refused(hostile, image):
    upstream, proxy, make = hostile
    push(image, upstream.host, "library/app:v1")
    cache = make(extra='[global]\nmax_manifest_size = "256B"\n')
    r = requests.get(cache.v2("hub/library/app/manifests/v1"), headers={"Accept": MANIFEST_ACCEPT})
    assert r.status_code == 502 and "max_manifest_size" in r.json()["errors"][0]["message"]
    assert requests.get(cache.v2("hub/library/app/tags/list")).status_code == 404


def test_redirect_loop_is_an_unavailable_error(hostile):
    upstream, proxy, make = hostile
    d = push_blob(upstream.url, "library/app", os.urandom(1024))
    proxy.fault(f"/blobs/{d}$", redirect_loop=True)
    cache = make(max_redirect=3)
    r = requests.get(cache.v2(f"hub/library/app/blobs/{d}"))
    assert r.status_code == 503 and "more than 3 redirects" in r.json()["errors"][0]["message"]
    _nothing_left(cache, d)


def test_slow_drip_hits_the_stall_timeout(hostile):
    upstream, proxy, make = hostile
    d = push_blob(upstream.url, "library/app", os.urandom(2 * 1024 * 1024))
    stalled = push_blob(upstream.url, "library/app", os.urandom(1024))
    proxy.fault(f"/blobs/{d}$", drip=(512 * 1024, 5.0))
    proxy.fault(f"/blobs/{stalled}$", delay=5.0)
    cache = make(read_timeout_secs=1)
    # Stalled mid-body: the bytes so far reached the client, then the response is cut.
    assert _cut_short(cache.v2(f"hub/library/app/blobs/{d}"))
    _nothing_left(cache, d)
    # Stalled before answering: a clean 503.
    r = requests.get(cache.v2(f"hub/library/app/blobs/{stalled}"))
    assert r.status_code == 503 and "timed out" in r.json()["errors"][0]["message"].lower()
    _nothing_left(cache, stalled)
