"""Background fills: once a manifest is fetched, its blobs are fetched by ``cache.fill_blob`` jobs
before any client asks (by the server's own drain by default, or by ``angos worker --queue cache``
with ``[global.job_queue]``), each once, listed in the jobs API while pending."""

from __future__ import annotations

import signal
import subprocess

import requests

from ..conftest import ANGOS
from ..replication.conftest import wait_for
from .conftest import MANIFEST_ACCEPT, cache_config, push, stored_blobs


def _fetch_manifest(cache, ref: str = "v1") -> None:
    r = requests.get(cache.v2(f"hub/library/app/manifests/{ref}"), headers={"Accept": MANIFEST_ACCEPT})
    assert r.status_code == 200, r.text


def test_blobs_of_a_fetched_manifest_are_filled_in_the_background(
        angos_factory, upstream, proxy_factory, image):
    push(image, upstream.host, "library/app:v1")
    proxy = proxy_factory(upstream.url)
    cache = angos_factory(config_text=cache_config({"url": proxy.url}))
    _fetch_manifest(cache)
    assert wait_for(lambda: set(image.blobs) <= stored_blobs(cache), timeout=20), cache.logs()
    assert all(proxy.count("GET", f"/blobs/{b}$") == 1 for b in image.blobs)
    # Now every blob is a hit for the namespace, with no further upstream request.
    for b in image.blobs:
        assert requests.get(cache.v2(f"hub/library/app/blobs/{b}")).status_code == 200
    assert all(proxy.count("GET", f"/blobs/{b}$") == 1 for b in image.blobs)
    assert "kind=cache.fill_blob" in cache.logs()


def test_a_separate_worker_drains_the_cache_queue(angos_factory, upstream, image):
    push(image, upstream.host, "library/app:v1")
    cache = angos_factory(config_text=cache_config({"url": upstream.url}, extra="[global.job_queue]\n"))
    _fetch_manifest(cache)
    listed = lambda: requests.get(cache.url + "/_ext/_jobs", params={"queue": "cache"}).json()["jobs"]  # noqa: E731
    pending = wait_for(lambda: len(listed()) == len(image.blobs) and listed(), timeout=10)
    assert sorted(j["lock_key"] for j in pending) == sorted(f"blob|{b}" for b in image.blobs)
    assert {j["kind"] for j in pending} == {"cache.fill_blob"}
    assert not set(image.blobs) & stored_blobs(cache)  # the server only enqueues

    log = open(cache.workdir / "worker.log", "ab")
    worker = subprocess.Popen(ANGOS + ["-c", str(cache.config_path), "worker", "--queue", "cache"], cwd=cache.workdir,
                              stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        assert wait_for(lambda: set(image.blobs) <= stored_blobs(cache), timeout=30), \
            (cache.workdir / "worker.log").read_text()
        assert wait_for(lambda: requests.get(cache.url + "/_ext/_jobs", params={"queue": "cache"}).json()["jobs"]
                        == [], timeout=10)
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(30)
        log.close()
