"""kill -9 during a large fill: after a restart nothing partial is visible, and the next pull
fetches the blob afresh, whole and verified, removing what the killed fill left behind.

200 MiB (the size the issue asks for) through a proxy slowed to 64 MiB/s keeps the fill in flight
long enough to be killed a quarter of the way in."""

from __future__ import annotations

import hashlib
import time

import pytest
import requests

from tests.conftest import wait_for

from .conftest import cache_config, push_blob, random_blob, stored_blobs

MiB = 1024 * 1024


def _session_bytes(cache) -> int:
    return sum(p.stat().st_size for p in (cache.workdir / "data" / "uploads").glob("*/data"))


@pytest.mark.slow
def test_kill_during_fill_leaves_nothing_visible_and_the_next_pull_completes(
        angos_factory, upstream, proxy_factory):
    d = push_blob(upstream.url, "library/big", random_blob(200 * MiB, seed=14))
    proxy = proxy_factory(upstream.url, rate=64 * MiB)
    cache = angos_factory(config_text=cache_config({"url": proxy.url}))

    reader = requests.get(cache.v2(f"hub/library/big/blobs/{d}"), stream=True, timeout=60)
    assert reader.status_code == 200
    wait_for(lambda: _session_bytes(cache) >= 50 * MiB, what="the fill reaches 50 MiB")
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


def test_scrub_uploads_removes_fill_records_whose_session_is_gone(angos_factory, tmp_path):
    import json
    import os
    import subprocess

    from ..conftest import ANGOS

    cache = angos_factory(config_text=cache_config({"url": "http://127.0.0.1:9"}))
    records = cache.workdir / "data" / "fills" / "sha256"
    records.mkdir(parents=True)
    stale, fresh = records / ("a" * 64), records / ("b" * 64)
    gone = "01a22a84-6f1b-7a68-bf77-ba12640c0932"
    for path in (stale, fresh):
        path.write_text(json.dumps({"upload_id": gone, "size": 10}))
    old = time.time() - 3600
    os.utime(stale, (old, old))
    res = subprocess.run(ANGOS + ["-c", str(cache.config_path), "scrub", "--uploads", "24h"], cwd=cache.workdir,
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert f"DeleteFillRecord digest=sha256:{'a' * 64}" in res.stdout + res.stderr
    assert not stale.exists() and fresh.exists()  # a record just written may belong to a fill starting now
