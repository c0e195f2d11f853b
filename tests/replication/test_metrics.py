"""Replication metrics on the server's /metrics: what an operator's alerts read.

- every configured downstream has its series from start-up: a downstream that was never up
  reads last success 0, every push outcome 0, and ``up`` 0 (the drain probed it);
- ``up`` follows a downstream no job is reaching (idle probes);
- backlog and oldest pending move with the queue in the in-process drain and with
  ``[global.job_queue]`` (SQLite and Redis) while no consumer takes the jobs;
- the per-downstream computation counts only what belongs to each downstream;
- bytes the downstream accepted are counted, and a converged or blob-sharing push adds only
  what it sent;
- ``angos replicate`` runs show up on the server (last run, last success, failures in a row);
- removing a downstream (a live reload) removes its up and backlog series.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import requests

from angos import metrics as m
from angos.config import load_config_text
from angos.queue.core import JobQueue
from angos.replication.backlog import downstream_backlog

from ..conftest import ROOT, free_port, wait_for
from .conftest import remote_digest, source_config

OCI = "application/vnd.oci.image.manifest.v1+json"
FAST = "[global.replication]\nbacklog_refresh_secs = 1\nidle_probe_secs = 1\n"


def scrape(server) -> dict[tuple[str, tuple], float]:
    """Every sample on /metrics as {(name, sorted label pairs): value}."""
    out = {}
    for line in requests.get(server.url + "/metrics", timeout=10).text.splitlines():
        if not line or line.startswith("#"):
            continue
        series, value = line.rsplit(" ", 1)
        name, _, labels = series.partition("{")
        pairs = tuple(sorted(tuple(p.split("=", 1)) for p in labels.rstrip("}").split(",") if p))
        out[(name, tuple((k, v.strip('"')) for k, v in pairs))] = float(value)
    return out


def metric(server, name: str, **labels) -> float | None:
    return scrape(server).get((name, tuple(sorted(labels.items()))))


def ds_metric(name: str, downstream: str):
    return lambda server: metric(server, name, downstream=downstream)


def push_image(server, ns: str, tag: str, layer: bytes, note: str = "") -> tuple[str, int]:
    """Push a config blob, one layer and a manifest over HTTP; returns (digest, bytes of all three)."""
    config = json.dumps({"architecture": "amd64", "os": "linux", "note": note}).encode()
    descs = []
    for blob in (config, layer):
        d = "sha256:" + hashlib.sha256(blob).hexdigest()
        r = requests.post(server.v2(f"{ns}/blobs/uploads/?digest={d}"), data=blob, timeout=30)
        assert r.status_code == 201, r.text
        descs.append({"digest": d, "size": len(blob)})
    body = json.dumps({"schemaVersion": 2, "mediaType": OCI,
                       "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **descs[0]},
                       "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", **descs[1]}]}).encode()
    r = requests.put(server.v2(f"{ns}/manifests/{tag}"), data=body, headers={"Content-Type": OCI}, timeout=30)
    assert r.status_code == 201, r.text
    return r.headers["Docker-Content-Digest"], len(config) + len(layer) + len(body)


def small_push(server, ns: str, tag: str) -> str:
    return push_image(server, ns, tag, os.urandom(64))[0]


def test_a_downstream_that_was_never_up_has_every_series_with_last_success_0_and_up_0(angos_factory):
    down = f"http://127.0.0.1:{free_port()}"  # nothing ever listens there
    source = angos_factory(config_text=source_config({"name": "down", "url": down}, extra=FAST))
    # No push at all: the drain's probe at start-up is what finds it down.
    assert wait_for(lambda: ds_metric("angos_replication_downstream_up", "down")(source) == 0.0,
                    what="the never-up downstream to read up 0")
    samples = scrape(source)
    ds = (("downstream", "down"),)
    assert samples[("angos_replication_last_success_timestamp_seconds", ds)] == 0.0
    for outcome in m.REPLICATION_PUSH_OUTCOMES:
        assert samples[("angos_replication_push_total", (("downstream", "down"), ("outcome", outcome)))] == 0.0
    assert samples[("angos_replication_sent_bytes_total", ds)] == 0.0
    assert wait_for(lambda: ds_metric("angos_replication_backlog", "down")(source) == 0.0, what="the backlog")
    assert metric(source, "angos_replication_oldest_pending_seconds", downstream="down") == 0.0
    assert metric(source, "angos_replication_dead_letters", downstream="down") == 0.0


def test_up_follows_a_downstream_that_no_job_reaches(angos_factory):
    peer = angos_factory()
    source = angos_factory(config_text=source_config({"name": "peer", "url": peer.url}, extra=FAST))
    up = ds_metric("angos_replication_downstream_up", "peer")
    assert wait_for(lambda: up(source) == 1.0, what="the idle downstream to read up 1")
    peer.stop()
    assert wait_for(lambda: up(source) == 0.0, what="the stopped downstream to read up 0")
    peer.start()
    assert wait_for(lambda: up(source) == 1.0, what="the returned downstream to read up 1")
    assert metric(source, "angos_replication_push_total", downstream="peer", outcome="pushed") == 0.0


def test_backlog_and_oldest_pending_move_with_the_in_process_drain(angos_factory):
    peer = angos_factory(start=False)  # its address is known; it starts later
    source = angos_factory(config_text=source_config({"name": "peer", "url": peer.url}, extra=FAST))
    backlog, oldest = (ds_metric(n, "peer") for n in ("angos_replication_backlog",
                                                        "angos_replication_oldest_pending_seconds"))
    assert wait_for(lambda: ds_metric("angos_replication_downstream_up", "peer")(source) == 0.0,
                    what="the downstream to be seen down")
    # The gauges come from a refresher of their own (every backlog_refresh_secs), not from the
    # probe that set up: they may appear a tick after it.
    assert wait_for(lambda: backlog(source) == 0.0 and oldest(source) == 0.0, what="an empty backlog")
    first = time.time()
    digests = {f"t{i}": small_push(source, "nginx/app", f"t{i}") for i in range(3)}
    assert wait_for(lambda: backlog(source) == 3.0, what="a backlog of the three waiting changes")
    waited = wait_for(lambda: oldest(source) or None, what="the oldest pending job's age")
    assert 0 < waited <= time.time() - first
    # The status API's (and the UI's) downstream rows read the same queue, at once.
    (row,) = requests.get(source.url + "/_ext/_replication/downstreams").json()["downstreams"]
    assert (row["downstream"], row["backlog"], row["dead_letters"]) == ("peer", 3, 0)
    assert 0 < row["oldest_pending_secs"] <= time.time() - first + 1
    assert wait_for(lambda: oldest(source) > waited, what="the oldest pending age to grow while it waits")
    peer.start()
    assert wait_for(lambda: all(remote_digest(peer, "nginx/app", t) == d for t, d in digests.items()), timeout=60,
                    what="the backlog to drain once the downstream is back")
    assert wait_for(lambda: backlog(source) == 0.0 and oldest(source) == 0.0, what="the gauges to return to 0")
    assert metric(source, "angos_replication_dead_letters", downstream="peer") == 0.0


@pytest.mark.parametrize("backend", ["sqlite", "redis"])
def test_backlog_with_a_job_queue_counts_the_jobs_no_worker_took_then_drains(angos_factory, request, backend):
    if backend == "redis":
        queue = f'backend = "redis"\nurl = "{request.getfixturevalue("redis_server")}"\n'
    else:
        queue = 'backend = "sqlite"\n'
    peer = angos_factory()
    source = angos_factory(config_text=source_config({"name": "peer", "url": peer.url},
                                                     extra=f"[global.job_queue]\n{queue}\n" + FAST))
    backlog, oldest = (ds_metric(n, "peer") for n in ("angos_replication_backlog",
                                                        "angos_replication_oldest_pending_seconds"))
    assert wait_for(lambda: backlog(source) == 0.0, what="the backlog series")
    # No worker runs yet: the consumers are held, so the backlog is exactly what was pushed.
    first = time.time()
    digests = {f"t{i}": small_push(source, "nginx/app", f"t{i}") for i in range(4)}
    assert wait_for(lambda: backlog(source) == 4.0, what="a backlog of four")
    waited = wait_for(lambda: oldest(source) or None, what="the oldest pending job's age")
    assert 0 < waited <= time.time() - first
    (row,) = requests.get(source.url + "/_ext/_replication/downstreams").json()["downstreams"]
    assert (row["downstream"], row["backlog"], row["dead_letters"]) == ("peer", 4, 0)
    # The status API's (and the UI's) downstream rows read the same queue, at once.
    (row,) = requests.get(source.url + "/_ext/_replication/downstreams").json()["downstreams"]
    assert (row["downstream"], row["backlog"], row["dead_letters"]) == ("peer", 4, 0)
    assert 0 < row["oldest_pending_secs"] <= time.time() - first + 1
    # With [global.job_queue] the drain's own series live in the worker, not on the server.
    assert metric(source, "angos_replication_push_total", downstream="peer", outcome="pushed") is None
    worker = subprocess.Popen([sys.executable, "-m", "angos.cli", "-c", str(source.config_path), "worker"],
                              cwd=source.workdir, stdout=open(source.workdir / "worker.log", "ab"),
                              stderr=subprocess.STDOUT, start_new_session=True,
                              env=dict(os.environ, PYTHONPATH=str(ROOT)))
    try:
        assert wait_for(lambda: all(remote_digest(peer, "nginx/app", t) == d for t, d in digests.items()),
                        timeout=60, what="the worker to replicate the backlog")
        assert wait_for(lambda: backlog(source) == 0.0 and oldest(source) == 0.0, what="the gauges to return to 0")
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(30)


def test_backlog_is_computed_per_downstream_from_the_queue(tmp_path):
    cfg = load_config_text(source_config({"name": "eu", "url": "http://127.0.0.1:1"},
                                         {"name": "us|west", "url": "http://127.0.0.1:2"})
                           .replace("@PORT@", "1").replace("@DATA@", str(tmp_path / "data")))
    q = JobQueue(cfg, "replication")
    try:
        before = time.time()
        for key in ("sync|eu|nginx/a|v1", "referrers|eu|nginx/a|sha256:" + "1" * 64, "sync|us|west|nginx/a|v1",
                    "sync|gone|nginx/a|v1", "cache|eu|x"):
            q.submit("replication.sync", key, {})
            time.sleep(0.002)  # distinct creation times (ms), so which job is oldest is defined
        q.submit("replication.sync", "sync|eu|nginx/a|v2", {}, delay=3600)  # deferred: still waiting
        found = downstream_backlog(cfg, q)
        assert list(found) == ["eu", "us|west"]  # configured ones, in order; "gone" is not reported
        assert (found["eu"].jobs, found["us|west"].jobs) == (3, 1)
        assert before - 0.001 <= found["eu"].oldest_pending_at < found["us|west"].oldest_pending_at <= time.time()
        assert found["eu"].dead_letters == 0 and not found["eu"].saturated
        assert downstream_backlog(cfg, q, cap=2)["eu"].saturated
    finally:
        q.close()


def test_bytes_sent_count_what_the_downstream_accepted(angos_factory):
    peer = angos_factory()
    source = angos_factory(config_text=source_config({"name": "peer", "url": peer.url}, extra=FAST))
    sent = ds_metric("angos_replication_sent_bytes_total", "peer")
    assert wait_for(lambda: sent(source) == 0.0, what="the sent-bytes series")
    layer = os.urandom(100_000)
    d1, size = push_image(source, "nginx/app", "v1", layer, "one")
    assert wait_for(lambda: remote_digest(peer, "nginx/app", "v1") == d1, what="the first image")
    assert wait_for(lambda: sent(source) == size, what="the first image's bytes")
    # Same layer, new config and manifest: the layer is already there and is not sent again.
    d2, _ = push_image(source, "nginx/app", "v2", layer, "two")
    assert wait_for(lambda: remote_digest(peer, "nginx/app", "v2") == d2, what="the second image")
    manifest2 = len(requests.get(source.v2(f"nginx/app/manifests/{d2}"), headers={"Accept": OCI}).content)
    config2 = len(json.dumps({"architecture": "amd64", "os": "linux", "note": "two"}).encode())
    assert wait_for(lambda: sent(source) == size + config2 + manifest2, what="only the new bytes counted")


def _replicate(server) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "angos.cli", "-c", str(server.config_path), "replicate"],
                          cwd=server.workdir, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)))


def test_reconcile_runs_are_visible_on_the_servers_metrics(angos_factory):
    peer = angos_factory(start=False)
    source = angos_factory(config_text=source_config({"name": "peer", "url": peer.url, "mode": "reconcile-only"},
                                                     extra=FAST))
    def gauge(name):
        return lambda: metric(source, name)

    last_run, last_ok, failures = (gauge(name) for name in (
        "angos_replication_reconcile_last_run_timestamp_seconds",
        "angos_replication_reconcile_last_success_timestamp_seconds",
        "angos_replication_reconcile_consecutive_failures"))
    assert wait_for(lambda: (last_run(), last_ok(), failures()) == (0.0, 0.0, 0.0), what="the series before any run")
    d = small_push(source, "nginx/app", "a")
    before = time.time()
    for n in (1, 2):  # the downstream is down: its probe is skipped and the run exits 1
        run = _replicate(source)
        assert run.returncode == 1 and "skipped=1" in run.stdout, run.stdout + run.stderr
        assert wait_for(lambda n=n: failures() == n, what=f"{n} failed run(s) in a row")
    assert before <= last_run() <= time.time() and last_ok() == 0.0
    peer.start()
    run = _replicate(source)
    assert run.returncode == 0, run.stdout + run.stderr
    assert remote_digest(peer, "nginx/app", "a") == d
    assert wait_for(lambda: failures() == 0.0, what="a clean run to reset the failures")
    assert last_ok() == last_run() > before


def test_removing_a_downstream_removes_its_up_and_backlog_series(angos_factory):
    peer = angos_factory()
    down = f"http://127.0.0.1:{free_port()}"
    source = angos_factory(config_text=source_config({"name": "peer", "url": peer.url},
                                                     {"name": "down", "url": down}, extra=FAST))
    assert wait_for(lambda: ds_metric("angos_replication_downstream_up", "down")(source) == 0.0
                    and ds_metric("angos_replication_backlog", "down")(source) == 0.0, what="both downstreams' series")
    # The operator removes "down" (a live reload: the server watches its configuration file).
    source.config_path.write_text(source_config({"name": "peer", "url": peer.url}, extra=FAST)
                                  .replace("@PORT@", str(source.port)).replace("@DATA@", str(source.workdir / "data")))

    def gone():
        s = scrape(source)
        names = {dict(labels).get("downstream") for (name, labels) in s
                 if name in ("angos_replication_downstream_up", "angos_replication_backlog")}
        return names == {"peer"} and s.get(("angos_replication_downstream_up", (("downstream", "peer"),))) == 1.0

    assert wait_for(gone, timeout=60, what="the removed downstream's up and backlog series to go")


def test_a_worker_serves_its_downstream_series_on_its_metrics_address(angos_factory):
    down = f"http://127.0.0.1:{free_port()}"
    source = angos_factory(config_text=source_config({"name": "down", "url": down},
                                                     extra='[global.job_queue]\nbackend = "sqlite"\n' + FAST))
    port = free_port()
    worker = subprocess.Popen([sys.executable, "-m", "angos.cli", "-c", str(source.config_path), "worker",
                               "--metrics-address", f"127.0.0.1:{port}"],
                              cwd=source.workdir, stdout=open(source.workdir / "worker.log", "ab"),
                              stderr=subprocess.STDOUT, start_new_session=True,
                              env=dict(os.environ, PYTHONPATH=str(ROOT)))
    try:
        class Worker:
            url = f"http://127.0.0.1:{port}"

        def up():
            try:
                return metric(Worker, "angos_replication_downstream_up", downstream="down")
            except requests.ConnectionError:
                return None

        assert wait_for(lambda: up() == 0.0, what="the worker's own /metrics to show the downstream down")
        assert metric(Worker, "angos_replication_last_success_timestamp_seconds", downstream="down") == 0.0
        assert metric(Worker, "angos_replication_push_total", downstream="down", outcome="pushed") == 0.0
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(30)


def test_a_worker_with_a_bad_metrics_address_fails_with_one_line(angos_factory):
    source = angos_factory(config_text=source_config({"name": "down", "url": "http://127.0.0.1:1"},
                                                     extra='[global.job_queue]\nbackend = "sqlite"\n'), start=False)
    res = subprocess.run([sys.executable, "-m", "angos.cli", "-c", str(source.config_path), "worker",
                          "--metrics-address", "nowhere"], cwd=source.workdir, capture_output=True, text=True,
                         timeout=60, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert res.returncode == 1 and res.stderr.strip().splitlines() == [
        "angos: --metrics-address: expected HOST:PORT, got 'nowhere'"], res.stderr
