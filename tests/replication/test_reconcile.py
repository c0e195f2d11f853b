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


def _metric(server, name: str, **labels) -> float:
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in requests.get(server.url + "/metrics").text.splitlines():
        if line.startswith(f"{name}{{") and line[line.index("{") + 1:line.index("}")] == want:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_jobs_replicate_enqueues_run_in_the_servers_drain_and_count_there(angos_factory):
    peer = angos_factory()
    source = angos_factory(config_text=source_config({"name": "nightly", "url": peer.url, "mode": "reconcile-only"}))
    digests = {f"v{i}": _put(source, "nginx/app", f"v{i}", f"s{i}") for i in range(3)}
    before = _metric(source, "angos_replication_push_total", downstream="nightly", outcome="pushed")
    res = scrub(source, "replicate")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "replicate: 3/3 jobs done (run by the queue's drain)" in res.stderr
    for tag, d in digests.items():
        assert remote_digest(peer, "nginx/app", tag) == d
    # Counted on the server's /metrics, where every other replication job is counted.
    assert _metric(source, "angos_replication_push_total", downstream="nightly", outcome="pushed") == before + 3


def test_reconcile_clears_the_dead_letters_of_tags_it_brings_in_sync(angos_factory):
    from .test_failures import _jobs

    locked = _locked_peer(angos_factory, "identity.id == 'replicator' && request.action != 'put-manifest'")
    source = angos_factory(config_text=source_config(
        {"name": "locked", "url": locked.url, "username": "replicator", "password": "s3cret"},
        extra="\n[global.replication]\nmax_attempts = 2\nretry_backoff_min_ms = 10\n"))
    d = _put(source, "nginx/app", "v1", "one")
    failed = _wait(lambda: _jobs(source, "/failed"))
    assert len(failed) == 1 and "403" in failed[0]["last_error"]
    assert failed[0]["attempts"] == 2   # [global.replication] applies to the in-process drain too
    locked.config_path.write_text(locked.config_path.read_text().replace(
        " && request.action != 'put-manifest'", ""))
    _wait(lambda: requests.put(locked.v2("nginx/probe/manifests/x"), data=b"{}", auth=("replicator", "s3cret"),
                               headers={"Content-Type": OCI}).status_code != 403)
    res = scrub(source, "replicate")
    assert res.returncode == 0, res.stdout + res.stderr
    assert requests.head(locked.v2("nginx/app/manifests/v1"), auth=("replicator", "s3cret"),
                         headers={"Accept": OCI}).headers.get("Docker-Content-Digest") == d
    assert _jobs(source, "/failed") == []
    # A second run finds the tag in sync and has nothing to do.
    again = scrub(source, "replicate")
    assert "enqueued=0" in again.stdout


def _wait(predicate, timeout: float = 30.0):
    from ..conftest import wait_for

    value = wait_for(predicate, timeout=timeout)
    assert value, "timed out"
    return value
