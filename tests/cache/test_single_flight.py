"""One upstream fetch per blob: 20 clients pull the same uncached ~50 MiB image at once, through a
cache with two gunicorn workers (plus its job drain, which fills blobs in the background). The
counting proxy in front of the upstream must see exactly one GET per blob, and every client must
get every byte right."""

from __future__ import annotations

import hashlib
import threading

import requests

from ..images import single_platform_image
from .conftest import MANIFEST_ACCEPT, cache_config, push, stored_blobs

CLIENTS = 20
MiB = 1024 * 1024


def _pull(cache, ref: str, barrier: threading.Barrier, results: list, i: int) -> None:
    try:
        with requests.Session() as s:
            barrier.wait(30)
            r = s.get(cache.v2(f"hub/library/big/manifests/{ref}"), headers={"Accept": MANIFEST_ACCEPT}, timeout=120)
            r.raise_for_status()
            manifest = r.json()
            got = {}
            for desc in [manifest["config"], *manifest["layers"]]:
                h, size = hashlib.sha256(), 0
                with s.get(cache.v2(f"hub/library/big/blobs/{desc['digest']}"), stream=True, timeout=120) as b:
                    b.raise_for_status()
                    for chunk in b.iter_content(1 << 20):
                        h.update(chunk)
                        size += len(chunk)
                got[desc["digest"]] = ("sha256:" + h.hexdigest(), size == desc["size"])
            results[i] = got
    except Exception as exc:  # noqa: BLE001 - reported by the assertion below
        results[i] = exc


def test_twenty_concurrent_cold_pulls_fetch_each_blob_once(angos_factory, upstream, proxy_factory, tmp_path):
    img = single_platform_image(tmp_path / "big", "v1", layer_sizes=(30 * MiB, 15 * MiB, 5 * MiB))
    push(img, upstream.host, "library/big:v1")
    # Slowed down, so the fill is still in flight while all 20 clients ask for it.
    proxy = proxy_factory(upstream.url, rate=40 * MiB)
    cache = angos_factory(config_text=cache_config({"url": proxy.url}, workers=2))

    barrier = threading.Barrier(CLIENTS)
    results: list = [None] * CLIENTS
    threads = [threading.Thread(target=_pull, args=(cache, "v1", barrier, results, i)) for i in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    for res in results:
        assert isinstance(res, dict), res
        assert all(actual == digest and size_ok for digest, (actual, size_ok) in res.items()), res
    for blob in img.blobs:
        assert proxy.count("GET", f"/blobs/{blob}$") == 1, (blob, proxy.counts)
    assert set(img.blobs) <= stored_blobs(cache)
    assert not list((cache.workdir / "data" / "uploads").glob("*/data")), "an upload session was left behind"


def test_two_servers_sharing_storage_fetch_each_blob_once_through_redis_fill_locks(
        angos_factory, upstream, proxy_factory, redis_server, tmp_path):
    """Two ``angos server``s (as on two hosts) share the storage and a Redis lock strategy: a blob
    both are asked for at once is still fetched once, whichever server leads."""
    img = single_platform_image(tmp_path / "big", "v1", layer_sizes=(12 * MiB, 6 * MiB))
    push(img, upstream.host, "library/big:v1")
    proxy = proxy_factory(upstream.url, rate=20 * MiB)
    shared = tmp_path / "shared"
    extra = (f'[metadata_store.fs]\nroot_dir = "{shared}"\n\n'
             f'[metadata_store.fs.lock_strategy.redis]\nurl = "{redis_server}"\n')
    servers = [angos_factory(config_text=cache_config({"url": proxy.url}, workers=1, extra=extra).replace(
        "@DATA@", str(shared))) for _ in range(2)]

    barrier = threading.Barrier(CLIENTS)
    results: list = [None] * CLIENTS
    threads = [threading.Thread(target=_pull, args=(servers[i % 2], "v1", barrier, results, i))
               for i in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    for res in results:
        assert isinstance(res, dict), res
        assert all(actual == digest and size_ok for digest, (actual, size_ok) in res.items()), res
    for blob in img.blobs:
        assert proxy.count("GET", f"/blobs/{blob}$") == 1, (blob, proxy.counts)
