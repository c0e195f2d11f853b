"""Configuration hot reload on a running server (no restart)."""

from __future__ import annotations

import requests

from .conftest import wait_for
from .replication.conftest import remote_digest
from .replication.test_failures import OCI, _small_manifest


def test_added_downstream_replicates_without_restart(angos_factory):
    peer = angos_factory()
    server = angos_factory()
    pid = server.pid
    old_workers = set(server.worker_pids())
    body, d = _small_manifest(server, "team/app", "before")
    assert requests.put(server.v2("team/app/manifests/v1"), data=body, headers={"Content-Type": OCI}).status_code == 201
    server.config_path.write_text(server.config_path.read_text() + f"""
[repository."team"]
[repository."team".access_policy]
default = "allow"
[[repository."team".downstream]]
name = "peer"
url = "{peer.url}"
""")
    assert wait_for(lambda: "configuration reloaded" in server.logs(), timeout=15)
    # The reload replaces the workers (the old ones finish what they serve).
    assert wait_for(lambda: not set(server.worker_pids()) & old_workers and len(server.worker_pids()) == 2,
                    timeout=30)
    body2, d2 = _small_manifest(server, "team/app", "after")
    r = requests.put(server.v2("team/app/manifests/v2"), data=body2, headers={"Content-Type": OCI})
    assert r.status_code == 201
    assert wait_for(lambda: remote_digest(peer, "team/app", "v2") == d2, timeout=15)
    assert remote_digest(peer, "team/app", "v1") is None  # pushed before the downstream existed
    assert server.pid == pid and server.proc.poll() is None  # same master: no restart


def test_invalid_edit_is_rejected_and_the_old_config_keeps_serving(angos_factory):
    server = angos_factory()
    good = server.config_path.read_text()
    server.config_path.write_text(good + "\n[global]\nmax_manifest_sise = 1\n")
    assert wait_for(lambda: "configuration change rejected" in server.logs(), timeout=15)
    assert "max_manifest_sise" in server.logs()
    body, d = _small_manifest(server, "still/works", "x")
    r = requests.put(server.v2("still/works/manifests/v1"), data=body, headers={"Content-Type": OCI})
    assert r.status_code == 201
    # A policy that would not compile is refused as well, before it reaches a worker.
    server.config_path.write_text(good.replace('default = "allow"', 'default = "allow"\nrules = ["identity.id ==="]'))
    assert wait_for(lambda: server.logs().count("configuration change rejected") >= 2, timeout=15)
    assert requests.get(server.v2("still/works/manifests/v1")).status_code == 200


def test_restart_only_change_is_logged_and_kept_until_restart(angos_factory):
    server = angos_factory()
    text = server.config_path.read_text()
    server.config_path.write_text(text.replace(f"port = {server.port}", f"port = {server.port + 1}")
                                  + "\n[global]\nmax_manifest_size = \"1KiB\"\n")
    assert wait_for(lambda: "only after a restart: server.port" in server.logs(), timeout=15)
    assert wait_for(lambda: "configuration reloaded" in server.logs(), timeout=15)
    # Still on the old port; the live part (the manifest size limit) applied.
    big = b'{"schemaVersion":2,"mediaType":"' + OCI.encode() + b'","config":' + b" " * 2048 + b"}"

    def limited():
        r = requests.put(server.v2("limits/app/manifests/v1"), data=big, headers={"Content-Type": OCI})
        return r.status_code == 413
    assert wait_for(limited, timeout=15)
