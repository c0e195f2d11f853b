"""README ("Monitoring"): the metrics its alert examples use move when their condition happens,
and ``/readyz`` answers for storage and locks only, never for a replication backlog.

- ``http_requests_total{status=~"5.."}`` counts server errors, by route;
- ``angos_replication_last_success_timestamp_seconds`` moves when (and only when) the
  downstream accepts something: it stays put through an outage and moves at its end;
- ``/readyz`` stays 200 while a downstream is down and the backlog of its jobs grows;
- ``angos_replication_reconcile_total{outcome}`` is counted by the reconcile (``angos
  replicate``) process itself: read here from its Prometheus multiprocess files, the way a
  collector of that process would;
- (``angos_job_queue_enqueue_failures_total`` is in tests/queue/test_enqueue_failures.py,
  ``auth_attempts_total{method="mtls"}`` in tests/auth/test_tls.py, the job-queue gauges in
  tests/queue/test_jobs_api.py.)
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

import requests

from .conftest import ROOT, chattr, free_port, wait_for
from .replication.conftest import remote_digest, source_config
from .replication.test_failures import OCI, _small_manifest


def metric(server, name: str, **labels) -> float | None:
    """The value of ``name`` with exactly ``labels`` on /metrics (None when absent)."""
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in requests.get(server.url + "/metrics", timeout=10).text.splitlines():
        m = re.fullmatch(rf"{re.escape(name)}(?:\{{(.*)\}})? (\S+)", line)
        if m and ",".join(sorted((m.group(1) or "").split(","))) == want:
            return float(m.group(2))
    return None


def server_errors(server) -> dict[str, float]:
    out: dict[str, float] = {}
    for line in requests.get(server.url + "/metrics", timeout=10).text.splitlines():
        if line.startswith("http_requests_total{") and re.search(r'status="5\d\d"', line):
            route = re.search(r'route="([^"]*)"', line).group(1)
            out[route] = out.get(route, 0.0) + float(line.rsplit(" ", 1)[1])
    return out


def put(server, ns: str, tag: str) -> str:
    body, d = _small_manifest(server, ns, f"{tag}-{time.monotonic_ns()}")
    r = requests.put(server.v2(f"{ns}/manifests/{tag}"), data=body, headers={"Content-Type": OCI}, timeout=30)
    assert r.status_code == 201, r.text
    return d


def test_server_errors_are_counted_by_route(angos_factory):
    server = angos_factory()
    before = server_errors(server)
    # The storage breaks: its root is no longer a directory, so writes fail.
    (server.workdir / "data").rename(server.workdir / "data.gone")
    (server.workdir / "data").write_text("not a directory")
    assert requests.get(server.url + "/readyz", timeout=10).status_code == 503
    statuses = [requests.post(server.v2("broken/app/blobs/uploads/"), timeout=10).status_code for _ in range(3)]
    assert all(s >= 500 for s in statuses), statuses
    after = server_errors(server)
    delta = {k: after[k] - before.get(k, 0.0) for k in after if after[k] != before.get(k, 0.0)}
    assert delta == {"readyz": 1.0, "start-upload": 3.0}


def test_last_success_moves_when_the_downstream_accepts_and_only_then(angos_factory):
    peer = angos_factory()
    source = angos_factory(config_text=source_config({"name": "peer", "url": peer.url}))
    gauge = lambda: metric(source, "angos_replication_last_success_timestamp_seconds", downstream="peer")  # noqa: E731
    pushed = time.time()
    d = put(source, "nginx/app", "v1")
    wait_for(lambda: remote_digest(peer, "nginx/app", "v1") == d, what="the first replication")
    first = wait_for(gauge, what="the last-success gauge")
    assert pushed <= first <= time.time()
    # An outage: a change waits, the downstream is marked down, and the gauge keeps its value.
    peer.stop()
    d2 = put(source, "nginx/app", "v2")
    wait_for(lambda: metric(source, "angos_replication_downstream_up", downstream="peer") == 0.0,
             what="the downstream to be seen down")
    assert gauge() == first
    peer.start()
    wait_for(lambda: remote_digest(peer, "nginx/app", "v2") == d2, timeout=60, what="the change after the outage")
    assert wait_for(lambda: gauge() > first, what="the gauge to move") <= time.time()


def test_readyz_stays_ready_while_a_replication_backlog_grows(angos_factory):
    down = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    source = angos_factory(config_text=source_config({"name": "down", "url": down}))
    for i in range(20):
        put(source, "nginx/backlog", f"t{i}")
    jobs = lambda: requests.get(source.url + "/_ext/_jobs", params={"queue": "replication", "n": 1000},  # noqa: E731
                                timeout=10).json()["jobs"]
    wait_for(lambda: metric(source, "angos_replication_downstream_up", downstream="down") == 0.0,
             what="the downstream to be seen down")
    backlog = jobs()
    assert len(backlog) == 20  # every change waits for the downstream (none dead-lettered)
    for _ in range(3):
        r = requests.get(source.url + "/readyz", timeout=10)
        assert r.status_code == 200, r.text
    assert len(jobs()) == 20


def _reconcile_counts(directory) -> dict[str, float]:
    from prometheus_client import CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(directory))
    return {s.labels["outcome"]: s.value for m in registry.collect() for s in m.samples
            if s.name == "angos_replication_reconcile_total"}


def _replicate(server, metrics_dir) -> subprocess.CompletedProcess:
    metrics_dir.mkdir()
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}
    return subprocess.run([sys.executable, "-m", "angos.cli", "-c", str(server.config_path), "replicate"],
                          cwd=server.workdir, capture_output=True, text=True, timeout=300, env=env)


def _summary(run) -> dict[str, int]:
    line = next(line for line in run.stdout.splitlines() if line.startswith("replicate: "))
    return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)\b", line) if k in ("enqueued", "skipped", "failed")}


def test_reconcile_outcomes_are_counted_by_the_reconcile_process(angos_factory, tmp_path):
    peer = angos_factory()
    down = f"http://127.0.0.1:{free_port()}"
    source = angos_factory(config_text=source_config(
        {"name": "peer", "url": peer.url, "mode": "reconcile-only"},
        {"name": "down", "url": down, "mode": "reconcile-only"}))
    for tag in ("a", "b"):
        put(source, "nginx/app", tag)
    run = _replicate(source, tmp_path / "m1")
    found = _summary(run)
    assert found["enqueued"] == 2 and found["skipped"] >= 1 and found["failed"] == 0, run.stdout + run.stderr
    assert _reconcile_counts(tmp_path / "m1") == {"enqueued": 2.0, "skipped": float(found["skipped"])}
    wait_for(lambda: remote_digest(peer, "nginx/app", "b") is not None, timeout=60, what="the reconciled tags")
    # A change the queue cannot take: the reconcile counts it as failed (and exits 1).
    put(source, "nginx/app", "c")
    db = source.workdir / "data" / "_jobs" / "pending" / "replication" / "queue.db"
    frozen = [p for p in (db, db.with_name("queue.db-wal"), db.with_name("queue.db-shm"), db.parent) if p.exists()]
    chattr("+i", *frozen)  # (see tests/queue/test_enqueue_failures.py)
    try:
        run = _replicate(source, tmp_path / "m2")
    finally:
        chattr("-i", *frozen)
    found = _summary(run)
    assert run.returncode == 1 and found["failed"] == 1 and found["enqueued"] == 0, run.stdout + run.stderr
    assert _reconcile_counts(tmp_path / "m2") == {"failed": 1.0, "skipped": float(found["skipped"])}
    assert os.listdir(tmp_path / "m2")  # the counts really came from the process's own files
