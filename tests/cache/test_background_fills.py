"""Background fills: once a manifest is fetched, its blobs are fetched by ``cache.fill_blob`` jobs
before any client asks (by the server's own drain by default, or by ``angos worker --queue cache``
with ``[global.job_queue]``), each once, listed in the jobs API while pending; a blob the upstream
lacks is dead-lettered at once, an outage retried until it ends."""

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


def test_a_blob_the_upstream_lacks_is_dead_lettered_at_once_and_an_outage_is_retried(
        angos_factory, upstream, proxy_factory, image):
    push(image, upstream.host, "library/app:v1")
    proxy = proxy_factory(upstream.url)
    lacking, failing = image.blobs[0], image.blobs[1]
    proxy.fault(f"/blobs/{lacking}$", status=404)
    proxy.fault(f"/blobs/{failing}$", status=503)
    cache = angos_factory(config_text=cache_config(
        {"url": proxy.url}, extra="[global.job_queue]\nretry_backoff_min_ms = 100\nretry_backoff_max_ms = 200\n"
                                  "max_attempts = 20\n"))
    _fetch_manifest(cache)
    log = open(cache.workdir / "worker.log", "ab")
    worker = subprocess.Popen(ANGOS + ["-c", str(cache.config_path), "worker", "--queue", "cache"], cwd=cache.workdir,
                              stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def jobs(which: str = "") -> list:
        r = requests.get(cache.url + f"/_ext/_jobs{which}", params={"queue": "cache"}, timeout=10)
        return r.json()["failed" if which else "jobs"]

    try:
        others = set(image.blobs) - {lacking, failing}
        assert wait_for(lambda: others <= stored_blobs(cache), timeout=30), (cache.workdir / "worker.log").read_text()
        dead = wait_for(lambda: jobs("/failed"), timeout=30, what="the lacking blob's dead letter")
        assert [(j["lock_key"], j["attempts"]) for j in dead] == [(f"blob|{lacking}", 1)]  # terminal: one attempt
        assert lacking in dead[0]["last_error"]
        # The outage is retried, not dead-lettered: its job comes back with attempts spent...
        retried = wait_for(lambda: [j for j in jobs() if j["lock_key"] == f"blob|{failing}" and j["attempts"] >= 2],
                           timeout=30, what="the failing blob's job to be retried")
        assert "503" in (retried[0]["last_error"] or "")
        assert [j["lock_key"] for j in jobs("/failed")] == [f"blob|{lacking}"]
        # ...and once the upstream serves it, the next attempt fills it.
        proxy.clear()
        assert wait_for(lambda: failing in stored_blobs(cache), timeout=30)
        assert wait_for(lambda: jobs() == [], timeout=30)
        assert lacking not in stored_blobs(cache)
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(30)
        log.close()
