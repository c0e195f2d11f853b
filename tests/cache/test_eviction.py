"""Eviction: retention rules apply to cached namespaces, and ``update_pull_time`` records cache
hits, so "keep what was pulled lately" keeps what clients still use; evicted content is fetched
again on the next pull."""

from __future__ import annotations

import subprocess

import requests

from ..conftest import ANGOS
from ..images import single_platform_image
from .conftest import cache_config, cache_counts, pull, push


def test_retention_on_pull_times_evicts_what_nobody_pulled_lately(angos_factory, upstream, tmp_path):
    for tag in ("v1", "v2"):
        push(single_platform_image(tmp_path / tag, tag), upstream.host, f"library/app:{tag}")
    cache = angos_factory(config_text=cache_config(
        {"url": upstream.url}, repo_extra='[repository."hub".retention_policy]\nrules = ["top_pulled(1)"]\n',
        extra="[global]\nupdate_pull_time = true\n"))
    pull(cache.host, "hub/library/app:v1", tmp_path / "a")
    pull(cache.host, "hub/library/app:v2", tmp_path / "b")
    pull(cache.host, "hub/library/app:v1", tmp_path / "c")  # a cache hit: v1 is now the latest pulled
    assert cache_counts(cache)[("hub", "manifest", "revalidated")] == 1

    res = subprocess.run(ANGOS + ["-c", str(cache.config_path), "scrub", "--retention"], cwd=cache.workdir,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert requests.get(cache.v2("hub/library/app/tags/list")).json()["tags"] == ["v1"]
    pull(cache.host, "hub/library/app:v2", tmp_path / "d")  # evicted: fetched again
    assert cache_counts(cache)[("hub", "manifest", "miss")] == 3
