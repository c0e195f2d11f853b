"""Pull-through against CNCF Distribution: cold and warm pulls with skopeo, tag revalidation,
by-digest pulls, outages, fallback, one platform of an index, writes refused, eviction.

The upstream sits behind :class:`tests.cache.proxy.Proxy`, which counts what the cache asks
for: that is how "served without an upstream request" and "one fetch per blob" are checked."""

from __future__ import annotations

import json

import requests

from ..conftest import skopeo
from ..images import OCI_MANIFEST, single_platform_image
from ..replication.conftest import wait_for
from .conftest import MANIFEST_ACCEPT, cache_config, cache_counts, head_digest, pull, push, stored_blobs


def _metric(server, name: str) -> float:
    for line in requests.get(server.url + "/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def _blob_gets(proxy, digest: str) -> int:
    return proxy.count("GET", f"/blobs/{digest}$")


def test_cold_pull_fetches_each_blob_once_and_warm_pull_fetches_nothing(
        angos_factory, upstream, proxy_factory, image, tmp_path):
    push(image, upstream.host, "library/app:v1")
    proxy = proxy_factory(upstream.url)
    cache = angos_factory(config_text=cache_config({"url": proxy.url}))

    pull(cache.host, "hub/library/app:v1", tmp_path / "cold")
    assert json.loads((tmp_path / "cold" / "index.json").read_text())["manifests"][0]["digest"] == image.digest
    for blob in image.blobs:
        assert _blob_gets(proxy, blob) == 1, blob
    assert wait_for(lambda: set(image.blobs) <= stored_blobs(cache), timeout=10)
    # Upstream bytes of a cold pull: exactly the image (manifest and every blob once).
    size = sum((image.layout / "blobs" / "sha256" / d.split(":")[1]).stat().st_size
               for d in [image.digest, *image.blobs])
    assert _metric(cache, 'angos_cache_upstream_bytes_total{repository="hub"}') == size

    before = dict(proxy.counts)
    pull(cache.host, "hub/library/app:v1", tmp_path / "warm")
    new = {k: v - before.get(k, 0) for k, v in proxy.counts.items() if v != before.get(k, 0)}
    # A mutable tag costs one HEAD to revalidate; nothing is downloaded again.
    assert new == {("HEAD", "/v2/library/app/manifests/v1"): 1}, new
    counts = cache_counts(cache)
    assert counts[("hub", "manifest", "miss")] == 1 and counts[("hub", "manifest", "revalidated")] == 1
    assert counts[("hub", "blob", "hit")] >= len(image.blobs)
    assert requests.get(cache.v2("hub/library/app/tags/list")).json() == {"name": "hub/library/app", "tags": ["v1"]}


def test_mutable_tag_changed_upstream_is_refreshed(angos_factory, upstream, proxy_factory, tmp_path):
    first = single_platform_image(tmp_path / "a", "v1")
    second = single_platform_image(tmp_path / "b", "v1")
    push(first, upstream.host, "library/app:latest")
    proxy = proxy_factory(upstream.url)
    cache = angos_factory(config_text=cache_config({"url": proxy.url}))
    assert head_digest(cache.v2("hub/library/app/manifests/latest")) == first.digest

    push(second, upstream.host, "library/app:latest")
    pull(cache.host, "hub/library/app:latest", tmp_path / "out")
    assert head_digest(cache.v2("hub/library/app/manifests/latest")) == second.digest
    assert cache_counts(cache)[("hub", "manifest", "miss")] == 2


def test_immutable_tag_changed_upstream_is_not_refreshed_nor_asked_about(
        angos_factory, upstream, proxy_factory, tmp_path):
    first = single_platform_image(tmp_path / "a", "v1")
    second = single_platform_image(tmp_path / "b", "v1")
    push(first, upstream.host, "library/app:1.0")
    push(first, upstream.host, "library/app:latest")
    proxy = proxy_factory(upstream.url)
    cache = angos_factory(config_text=cache_config(
        {"url": proxy.url}, repo_extra='immutable_tags = true\nimmutable_tags_exclusions = ["^latest$"]\n'))
    pull(cache.host, "hub/library/app:1.0", tmp_path / "one")
    pull(cache.host, "hub/library/app:latest", tmp_path / "two")

    push(second, upstream.host, "library/app:1.0")
    push(second, upstream.host, "library/app:latest")
    before = proxy.count("HEAD", "/manifests/1.0$") + proxy.count("GET", "/manifests/1.0$")
    assert head_digest(cache.v2("hub/library/app/manifests/1.0")) == first.digest
    assert proxy.count("HEAD", "/manifests/1.0$") + proxy.count("GET", "/manifests/1.0$") == before
    # The excluded tag is mutable: revalidated and refreshed.
    assert head_digest(cache.v2("hub/library/app/manifests/latest")) == second.digest


def test_by_digest_pull_never_asks_upstream_once_cached(angos_factory, upstream, proxy_factory, image, tmp_path):
    push(image, upstream.host, "library/app:v1")
    proxy = proxy_factory(upstream.url)
    cache = angos_factory(config_text=cache_config({"url": proxy.url}))
    pull(cache.host, f"hub/library/app@{image.digest}", tmp_path / "one")
    asked = proxy.count("GET", "/manifests/") + proxy.count("HEAD", "/manifests/")
    assert asked == 1
    pull(cache.host, f"hub/library/app@{image.digest}", tmp_path / "two")
    assert proxy.count("GET", "/manifests/") + proxy.count("HEAD", "/manifests/") == asked


def test_upstream_down_serves_cached_content_and_fails_uncached_naming_the_upstream(
        angos_factory, upstream, image, tmp_path):
    push(image, upstream.host, "library/app:v1")
    cache = angos_factory(config_text=cache_config({"url": upstream.url, "connect_timeout_secs": 2}))
    pull(cache.host, "hub/library/app:v1", tmp_path / "before")
    upstream.stop()

    r = requests.get(cache.v2("hub/library/app/manifests/v1"), headers={"Accept": MANIFEST_ACCEPT})
    assert r.status_code == 200 and r.headers["Docker-Content-Digest"] == image.digest
    assert r.headers["Warning"].startswith('110 - "Response is Stale')
    pull(cache.host, "hub/library/app:v1", tmp_path / "during")
    assert "serving cached hub/library/app:v1" in cache.logs()
    assert cache_counts(cache)[("hub", "manifest", "stale")] >= 1

    r = requests.get(cache.v2("hub/library/app/manifests/v2"), headers={"Accept": MANIFEST_ACCEPT})
    assert r.status_code == 503 and upstream.url in r.json()["errors"][0]["message"]
    missing = "sha256:" + "0" * 64
    r = requests.get(cache.v2(f"hub/library/app/blobs/{missing}"))
    assert r.status_code == 503 and upstream.url in r.json()["errors"][0]["message"]
    assert requests.get(cache.url + "/readyz").status_code == 200


def test_unknown_content_is_a_404_naming_the_upstream(angos_factory, upstream):
    cache = angos_factory(config_text=cache_config({"url": upstream.url}))
    r = requests.get(cache.v2("hub/library/nothing/manifests/v1"), headers={"Accept": MANIFEST_ACCEPT})
    assert r.status_code == 404 and r.json()["errors"][0]["code"] == "MANIFEST_UNKNOWN"
    assert upstream.url in r.json()["errors"][0]["message"]
    r = requests.get(cache.v2("hub/library/nothing/blobs/sha256:" + "1" * 64))
    assert r.status_code == 404 and r.json()["errors"][0]["code"] == "BLOB_UNKNOWN"


def test_falls_back_to_the_next_upstream_on_5xx_and_on_unreachable(
        angos_factory, upstream, proxy_factory, image, tmp_path):
    push(image, upstream.host, "library/app:v1")
    failing = proxy_factory(upstream.url)
    failing.fault(".", status=500)
    cache = angos_factory(config_text=cache_config(
        {"url": "http://127.0.0.1:9", "connect_timeout_secs": 2}, {"url": failing.url}, {"url": upstream.url}))
    pull(cache.host, "hub/library/app:v1", tmp_path / "out")
    assert failing.count("GET", "/manifests/v1$") == 1


def test_index_pulled_for_one_platform_fetches_only_that_platform(
        angos_factory, upstream, proxy_factory, index, tmp_path):
    push(index, upstream.host, "library/multi:v1")
    proxy = proxy_factory(upstream.url)
    cache = angos_factory(config_text=cache_config({"url": proxy.url}))
    pull(cache.host, "hub/library/multi:v1", tmp_path / "arm", None, "--override-arch", "arm64")

    amd, arm = index.manifests
    half = len(index.blobs) // 2
    amd_blobs, arm_blobs = index.blobs[:half], index.blobs[half:]
    assert proxy.count("GET", f"/manifests/{arm}$") == 1
    assert proxy.count("GET", f"/manifests/{amd}$") == 0
    assert all(_blob_gets(proxy, b) == 1 for b in arm_blobs)
    # Background fills never reach into the platform nobody asked for.
    assert wait_for(lambda: set(arm_blobs) <= stored_blobs(cache), timeout=10)
    assert all(_blob_gets(proxy, b) == 0 for b in amd_blobs)
    assert not set(amd_blobs) & stored_blobs(cache)


def test_writes_are_refused_and_deletes_evict(angos_factory, upstream, image, tmp_path):
    push(image, upstream.host, "library/app:v1")
    cache = angos_factory(config_text=cache_config({"url": upstream.url}))
    pull(cache.host, "hub/library/app:v1", tmp_path / "out")

    other = single_platform_image(tmp_path / "other", "v2")
    res = skopeo("copy", "--dest-tls-verify=false", other.oci_ref, f"docker://{cache.host}/hub/library/app:v2",
                 check=False)
    assert res.returncode != 0
    r = requests.post(cache.v2("hub/library/app/blobs/uploads/"))
    assert r.status_code == 405 and r.json()["errors"][0]["code"] == "UNSUPPORTED"
    assert "pull-through cache of " + upstream.url in r.json()["errors"][0]["message"]
    r = requests.put(cache.v2("hub/library/app/manifests/v2"), data=b"{}", headers={"Content-Type": OCI_MANIFEST})
    assert r.status_code == 405
    # Other repositories still take pushes.
    skopeo("copy", "--dest-tls-verify=false", other.oci_ref, f"docker://{cache.host}/local/app:v2")

    assert requests.delete(cache.v2(f"hub/library/app/manifests/{image.digest}")).status_code == 202
    r = requests.get(cache.v2("hub/library/app/tags/list"))
    assert r.status_code == 404 and r.json()["errors"][0]["code"] == "NAME_UNKNOWN"  # nothing cached is left
    # Evicted content is fetched again on the next pull.
    pull(cache.host, "hub/library/app:v1", tmp_path / "again")
    assert head_digest(cache.v2("hub/library/app/manifests/v1")) == image.digest
