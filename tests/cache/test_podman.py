"""podman pulls through the cache as a registry mirror (``registries.conf``).

podman (containers/image) does not send the ``?ns=`` parameter, so the mirror
entry names the cache repository as a path: ``<cache>/hub`` mirrors the
upstream host, and ``<upstream>/library/app`` is fetched as ``hub/library/app``.
Everything runs on 127.0.0.1 (the "upstream" is a local Distribution)."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile

import pytest

from .conftest import cache_config, cache_counts, head_digest, push


def _podman(tmp_path, runroot: str, *args: str) -> subprocess.CompletedProcess:
    env = {"CONTAINERS_REGISTRIES_CONF": str(tmp_path / "registries.conf"),
           "CONTAINERS_CONF": str(tmp_path / "containers.conf"), "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
           "HOME": str(tmp_path)}
    cmd = ["podman", "--root", str(tmp_path / "root"), "--runroot", runroot,
           "--storage-driver", "vfs", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180, env=env)


def test_podman_pulls_through_the_cache_configured_as_a_mirror(angos_factory, upstream, image, tmp_path):
    if shutil.which("podman") is None:
        pytest.fail("podman is not installed (make test installs it)")
    push(image, upstream.host, "library/app:v1")
    cache = angos_factory(config_text=cache_config({"url": upstream.url}))
    (tmp_path / "registries.conf").write_text(f"""\
unqualified-search-registries = []

[[registry]]
prefix = "{upstream.host}"
location = "{upstream.host}"
insecure = true

[[registry.mirror]]
location = "{cache.host}/hub"
insecure = true
""")
    (tmp_path / "containers.conf").write_text('[engine]\nevents_logger = "none"\ncgroup_manager = "cgroupfs"\n')

    # podman refuses a runroot path longer than 50 characters, which pytest's tmp_path is.
    with tempfile.TemporaryDirectory(prefix="angos-podman-") as runroot:
        res = _podman(tmp_path, runroot, "pull", f"{upstream.host}/library/app:v1")
        assert res.returncode == 0, res.stderr
        res = _podman(tmp_path, runroot, "image", "inspect", f"{upstream.host}/library/app:v1")
    assert json.loads(res.stdout)[0]["Digest"] == image.digest
    # The mirror served it: the cache fetched and now holds the tag.
    assert head_digest(cache.v2("hub/library/app/manifests/v1")) == image.digest
    assert cache_counts(cache)[("hub", "manifest", "miss")] == 1
