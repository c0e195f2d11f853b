"""kill -9 during a large fill: after a restart nothing partial is visible, and the next pull
fetches the blob afresh, whole and verified, removing what the killed fill left behind.

64 MiB through a proxy slowed to 16 MiB/s keeps the fill in flight long enough to be killed."""

from __future__ import annotations

import hashlib
import time

import requests

from .conftest import cache_config, push_blob, random_blob, stored_blobs

MiB = 1024 * 1024


def _session_bytes(cache) -> int:
    return sum(p.stat().st_size for p in (cache.workdir / "data" / "uploads").glob("*/data"))


def test_kill_during_fill_leaves_nothing_visible_and_the_next_pull_completes(
        angos_factory, upstream, proxy_factory):
    d = push_blob(upstream.url, "library/big", random_blob(64 * MiB, seed=14))
    proxy = proxy_factory(upstream.url, rate=16 * MiB)
    cache = angos_factory(config_text=cache_config({"url": proxy.url}))

    reader = requests.get(cache.v2(f"hub/library/big/blobs/{d}"), stream=True, timeout=60)
    assert reader.status_code == 200
    deadline = time.monotonic() + 30
    while _session_bytes(cache) < 8 * MiB and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _session_bytes(cache) >= 8 * MiB, "the fill never got going"
    cache.kill()
    reader.close()

    partial = sorted(p.parent.name for p in (cache.workdir / "data" / "uploads").glob("*/data"))
    assert partial, "the killed fill's upload session should still be on disk"
    assert d not in stored_blobs(cache)

    proxy.rate = None
    cache.start()
    h = hashlib.sha256()
    with requests.get(cache.v2(f"hub/library/big/blobs/{d}"), stream=True, timeout=120) as r:
        assert r.status_code == 200
        for chunk in r.iter_content(1 << 20):
            h.update(chunk)
    assert "sha256:" + h.hexdigest() == d
    assert d in stored_blobs(cache)
    assert proxy.count("GET", f"/blobs/{d}$") == 2
    # The new leader removed the session the killed one left behind.
    left = {p.parent.name for p in (cache.workdir / "data" / "uploads").glob("*/data")}
    assert not left & set(partial)
