"""``angos scrub --replicate`` / ``angos replicate``: the seed's "Reconcile on Demand"."""

from __future__ import annotations

import subprocess
import sys

import requests

from ..conftest import ROOT
from .conftest import remote_digest, source_config
from .test_failures import OCI, _locked_peer, _small_manifest

QUEUE_ONLY = "\n[global.job_queue]\nmax_attempts = 5\nretry_backoff_min_ms = 50\nretry_backoff_max_ms = 200\n"


def scrub(server, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "angos.cli", "-c", str(server.config_path), *args],
                          cwd=server.workdir, capture_output=True, text=True, timeout=300, env={"PYTHONPATH": str(ROOT),
                                                                                                   "PATH": "/usr/bin:/bin"})


def _put(server, ns, tag, seed):
    body, d = _small_manifest(server, ns, seed)
    assert requests.put(server.v2(f"{ns}/manifests/{tag}"), data=body, headers={"Content-Type": OCI}).status_code == 201
    return d


def _actions(out: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith("Enqueue")]


def test_dry_run_lists_exactly_the_drift_then_the_run_converges(angos_factory):
    event_peer = angos_factory(start=False)   # down while the tags are pushed
    rec_peer = angos_factory()                # reconcile-only: never gets live pushes
    source = angos_factory(config_text=source_config(
        {"name": "live", "url": event_peer.url, "mode": "event+reconcile"},
        {"name": "nightly", "url": rec_peer.url + "/mirror", "mode": "reconcile-only"},
        extra=QUEUE_ONLY))
    # The mirror holds an older, different app:v2 (written before the source's, so
    # last-writer-wins lets the reconcile push replace it).
    _put(rec_peer, "mirror/app", "v2", "stale")
    digests = {("nginx/app", "v1"): _put(source, "nginx/app", "v1", "a1"),
               ("nginx/app", "v2"): _put(source, "nginx/app", "v2", "a2"),
               ("nginx/web", "v1"): _put(source, "nginx/web", "v1", "w1")}
    event_peer.start()

    dry = scrub(source, "scrub", "--replicate", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    expected_live = [f"EnqueueReplicationPush downstream=live namespace={ns} tag={tag}"
                     for ns, tag in sorted(digests)]
    mirror_drift = ["EnqueueReplicationPush downstream=nightly namespace=mirror/app tag=v1",
                    "EnqueueReplicationPush downstream=nightly namespace=mirror/app tag=v2",
                    "EnqueueReplicationPush downstream=nightly namespace=mirror/web tag=v1"]
    assert _actions(dry.stdout) == expected_live + mirror_drift
    assert dry.stdout.strip().splitlines()[-1].startswith("replicate: namespaces=2 tags_checked=6")
    # Nothing changed anywhere.
    assert all(remote_digest(event_peer, ns, tag) is None for ns, tag in digests)
    assert remote_digest(rec_peer, "mirror/web", "v1") is None

    real = scrub(source, "replicate")
    assert real.returncode == 0, real.stderr + real.stdout
    for (ns, tag), d in digests.items():
        assert remote_digest(event_peer, ns, tag) == d
        assert remote_digest(rec_peer, ns.replace("nginx", "mirror", 1), tag) == d

    again = scrub(source, "scrub", "--replicate", "--dry-run")
    assert again.returncode == 0
    assert _actions(again.stdout) == []
    again = scrub(source, "scrub", "--replicate")
    assert "enqueued=0" in again.stdout and again.returncode == 0


def test_prune_deletes_downstream_only_tags_and_is_off_by_default(angos_factory):
    pruned, kept = angos_factory(), angos_factory()
    source = angos_factory(config_text=source_config(
        {"name": "mirror", "url": pruned.url, "prune": True},
        {"name": "peer", "url": kept.url}, extra=QUEUE_ONLY))
    d = _put(source, "nginx/app", "v1", "v1")
    for peer in (pruned, kept):
        _put(peer, "nginx/app", "extra", "extra")
    dry = scrub(source, "scrub", "--replicate", "--dry-run")
    assert _actions(dry.stdout) == [
        "EnqueueReplicationPush downstream=mirror namespace=nginx/app tag=v1",
        "EnqueueReplicationDelete downstream=mirror namespace=nginx/app tag=extra",
        "EnqueueReplicationPush downstream=peer namespace=nginx/app tag=v1",
    ]
    assert scrub(source, "replicate").returncode == 0
    assert remote_digest(pruned, "nginx/app", "extra") is None
    assert remote_digest(pruned, "nginx/app", "v1") == d
    assert remote_digest(kept, "nginx/app", "extra") is not None  # never deleted without prune


def test_event_only_and_filtered_namespaces_are_not_reconciled(angos_factory):
    ev, filt = angos_factory(), angos_factory()
    source = angos_factory(config_text=source_config(
        {"name": "events", "url": ev.url, "mode": "event-only"},
        {"name": "filtered", "url": filt.url, "namespace_filter": ["^nginx/keep"]}, extra=QUEUE_ONLY))
    _put(source, "nginx/keep", "v1", "k")
    _put(source, "nginx/drop", "v1", "d")
    dry = scrub(source, "scrub", "--replicate", "--dry-run")
    assert _actions(dry.stdout) == ["EnqueueReplicationPush downstream=filtered namespace=nginx/keep tag=v1"]


def test_bad_credentials_skip_every_probe_and_exit_1(angos_factory):
    locked = _locked_peer(angos_factory, "identity.id == 'replicator'")  # the replicator's password is s3cret
    source = angos_factory(config_text=source_config(
        {"name": "locked", "url": locked.url, "username": "replicator", "password": "wrong"}, extra=QUEUE_ONLY))
    _put(source, "nginx/app", "v1", "1")
    _put(source, "nginx/app", "v2", "2")
    res = scrub(source, "scrub", "--replicate")
    assert res.returncode == 1
    assert "skipped=2" in res.stdout and "enqueued=0" in res.stdout
    warnings = [line for line in res.stderr.splitlines() if "WARNING" in line and "downstream=locked" in line]
    assert len(warnings) == 2


def test_prune_against_distribution_completes_as_unsupported_without_dead_letters(angos_factory,
                                                                                  docker_registry_factory):
    """Distribution refuses tag deletes; a prune there is reported unsupported, not retried forever."""
    dist = docker_registry_factory()
    source = angos_factory(config_text=source_config({"name": "mirror", "url": dist.url, "prune": True},
                                                     extra=QUEUE_ONLY))
    _put(source, "nginx/app", "v1", "v1")
    extra = _put(source, "nginx/app", "extra", "extra")
    assert scrub(source, "replicate").returncode == 0          # both tags now on the mirror
    assert requests.delete(source.v2("nginx/app/manifests/extra")).status_code == 202
    jobs = requests.get(source.url + "/_ext/_jobs?queue=replication").json()["jobs"]
    for job in jobs:  # the live delete job: leave the work to reconcile's prune
        requests.delete(source.url + f"/_ext/_jobs/pending/{job['storage_key']}?queue=replication")
    dry = scrub(source, "scrub", "--replicate", "--dry-run")
    assert _actions(dry.stdout) == ["EnqueueReplicationDelete downstream=mirror namespace=nginx/app tag=extra"]
    real = scrub(source, "replicate")
    assert real.returncode == 0, real.stderr
    assert "enqueued=1" in real.stdout
    assert requests.get(source.url + "/_ext/_jobs/failed?queue=replication").json()["failed"] == []
    assert requests.get(source.url + "/_ext/_jobs?queue=replication").json()["jobs"] == []
    r = requests.head(f"{dist.url}/v2/nginx/app/manifests/extra",
                      headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
    assert r.status_code == 200 and r.headers["Docker-Content-Digest"] == extra  # Distribution kept it
