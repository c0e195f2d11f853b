"""Faults a downstream can have, in the default in-process mode: it is down for minutes, it hangs,
it is slow while one tag churns, it has no referrers API. Nothing is lost, nothing dead-letters
that a retry could fix, and a bad downstream does not hold back a good one."""

from __future__ import annotations

import socket
import statistics
import threading
import time

import pytest
import requests

from ..netem import SlowProxy
from ..conftest import wait_for
from .conftest import remote_digest, source_config
from .test_failures import OCI, _jobs, _small_manifest


def _put(server, ns: str, tag: str, body: bytes) -> None:
    r = requests.put(server.v2(f"{ns}/manifests/{tag}"), data=body, headers={"Content-Type": OCI})
    assert r.status_code == 201, r.text


def _wait_jobs_empty(server, timeout: float = 30) -> None:
    assert wait_for(lambda: _jobs(server) == [], timeout=timeout), _jobs(server)


@pytest.mark.slow
def test_two_minute_outage_with_300_pushes_and_50_deletes_arrives_without_reconcile(angos_factory):
    peer = angos_factory()
    source = angos_factory(config_text=source_config({"name": "peer", "url": peer.url}))
    ns = "nginx/outage"
    old = {}
    for i in range(50):
        body, d = _small_manifest(source, ns, f"old{i}")
        _put(source, ns, f"old{i}", body)
        old[f"old{i}"] = d
    assert wait_for(lambda: all(remote_digest(peer, ns, t) == d for t, d in old.items()), timeout=60)
    _wait_jobs_empty(source)

    peer.stop()
    down_at = time.monotonic()
    new = {}
    for i in range(300):
        body, d = _small_manifest(source, ns, f"new{i}")
        _put(source, ns, f"new{i}", body)
        new[f"new{i}"] = d
    for tag in old:
        assert requests.delete(source.v2(f"{ns}/manifests/{tag}")).status_code == 202
    # The outage itself: two minutes of the downstream refusing connections.
    time.sleep(max(0.0, 120 - (time.monotonic() - down_at)))  # the outage under test lasts two minutes
    assert _jobs(source, "/failed") == []
    metrics = requests.get(source.url + "/metrics").text
    assert 'angos_replication_downstream_up{downstream="peer"} 0.0' in metrics
    peer.start()
    back_at = time.monotonic()

    def arrived():
        return (all(remote_digest(peer, ns, t) == d for t, d in new.items())
                and all(remote_digest(peer, ns, t) is None for t in old))

    assert wait_for(arrived, timeout=90, interval=0.5)
    print(f"backlog of 350 changes drained {time.monotonic() - back_at:.1f}s after the downstream returned")
    _wait_jobs_empty(source)
    assert _jobs(source, "/failed") == []


class HungServer:
    """Accepts TCP connections and never answers a byte; records each one's request line."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.conns: list[socket.socket] = []
        self.request_lines: list[str] = []
        self._stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)
            threading.Thread(target=self._read, args=(conn,), daemon=True).start()

    def _read(self, conn: socket.socket) -> None:
        try:
            data = conn.recv(4096)
        except OSError:
            data = b""
        self.request_lines.append(data.split(b"\r\n", 1)[0].decode(errors="replace"))

    def job_requests(self) -> list[str]:
        """Request lines of jobs: everything but the breaker's probe (``GET /v2/``)."""
        return [line for line in self.request_lines if not line.startswith("GET /v2/ ")]

    def close(self) -> None:
        self._stop = True
        self.sock.close()
        for c in self.conns:
            c.close()


def _latencies(source, peer, ns: str, n: int = 12) -> list[float]:
    out = []
    for i in range(n):
        body, d = _small_manifest(source, ns, f"lat{i}-{time.monotonic_ns()}")
        start = time.monotonic()
        _put(source, ns, f"t{i}", body)
        assert wait_for(lambda: remote_digest(peer, ns, f"t{i}") == d, timeout=30, interval=0.005)
        out.append(time.monotonic() - start)
    return out


def test_a_hung_downstream_does_not_delay_a_healthy_one(angos_factory):
    peer = angos_factory()
    hung = HungServer()
    try:
        source = angos_factory(config_text=source_config({"name": "hung", "url": hung.url},
                                                         {"name": "healthy", "url": peer.url}))
        # Fill the hung downstream's share of the pool first.
        for i in range(4):
            body, _ = _small_manifest(source, "nginx/warm", f"w{i}")
            _put(source, "nginx/warm", f"w{i}", body)
        assert wait_for(lambda: len(hung.job_requests()) >= 2, timeout=10)
        # Every push reaches the healthy downstream while the hung one holds its share. Without the
        # share the hung downstream would hold every slot for its 300 s read timeout, and none would
        # arrive within _latencies' wait. (The latencies are printed, not judged: no timed assertions.)
        with_hung = statistics.median(_latencies(source, peer, "nginx/app"))
        print(f"healthy downstream latency p50 beside a hung one: {with_hung * 1000:.0f} ms")
        # Its share of the pool of 4 between two downstreams: at most two of its jobs ever reached
        # it (each one holds a connection for its 300 s read timeout; deferred ones never connect).
        # The breaker's probes (GET /v2/, at start-up and while it is down) are not jobs.
        assert len(hung.job_requests()) == 2, hung.request_lines
    finally:
        hung.close()


def test_push_delete_churn_on_a_slow_downstream_holds_one_slot(angos_factory):
    peer = angos_factory()
    slow = SlowProxy(peer.port, 64 * 1024).start()   # 64 KiB/s: each push takes about a second
    try:
        source = angos_factory(config_text=source_config({"name": "slow", "url": slow.url}))
        ns = "nginx/churn"
        samples = []
        stop = threading.Event()

        def sample():
            while not stop.is_set():
                jobs = _jobs(source)
                samples.append(([j for j in jobs if j.get("state") == "running"], jobs))
                time.sleep(0.02)  # the sampling interval of the observer, not a wait for an outcome

        sampler = threading.Thread(target=sample)
        sampler.start()
        try:
            for i in range(3):
                blob = bytes([i]) * 48 * 1024
                import hashlib

                bd = "sha256:" + hashlib.sha256(blob).hexdigest()
                assert requests.post(source.v2(f"{ns}/blobs/uploads/?digest={bd}"), data=blob).status_code == 201
                body = (f'{{"schemaVersion":2,"mediaType":"{OCI}","config":{{"mediaType":'
                        f'"application/vnd.oci.image.config.v1+json","digest":"{bd}","size":{len(blob)}}},'
                        f'"layers":[]}}').encode()
                _put(source, ns, "t", body)
                time.sleep(0.3)  # the churn under test: the delete lands while the push still crawls out
                assert requests.delete(source.v2(f"{ns}/manifests/t")).status_code == 202
            _wait_jobs_empty(source, timeout=60)
        finally:
            stop.set()
            sampler.join()
        assert max(len(running) for running, _ in samples) <= 1
        assert max(len(jobs) for _, jobs in samples) <= 2   # at most one pending and one running
        assert any(running for running, _ in samples)       # the sampler did see the job run
        assert remote_digest(peer, ns, "t") is None
        assert _jobs(source, "/failed") == []
    finally:
        slow.stop()


def test_eight_referrers_in_a_row_all_reach_the_fallback_index_and_replicate_repairs_it(
        angos_factory, docker_registry_factory):
    from .test_reconcile import scrub

    dist = docker_registry_factory()
    source = angos_factory(config_text=source_config({"name": "dist", "url": dist.url}))
    ns = "nginx/signed"
    body, subject = _small_manifest(source, ns, "subject")
    _put(source, ns, "v1", body)
    subject_desc = {"mediaType": OCI, "digest": subject, "size": len(body)}
    referrers = []
    for i in range(8):
        rbody, _ = _small_manifest(source, ns, f"sig{i}")
        doc = requests.compat.json.loads(rbody)
        doc["subject"] = subject_desc
        doc["artifactType"] = "application/vnd.example.sig"
        rbody = requests.compat.json.dumps(doc, separators=(",", ":")).encode()
        import hashlib

        rd = "sha256:" + hashlib.sha256(rbody).hexdigest()
        r = requests.put(source.v2(f"{ns}/manifests/{rd}"), data=rbody, headers={"Content-Type": OCI})
        assert r.status_code == 201, r.text
        referrers.append(rd)
    fallback = f"{dist.url}/v2/{ns}/manifests/sha256-{subject.split(':', 1)[1]}"
    accept = {"Accept": "application/vnd.oci.image.index.v1+json"}

    def listed():
        r = requests.get(fallback, headers=accept)
        return sorted(e["digest"] for e in r.json()["manifests"]) if r.status_code == 200 else []

    assert wait_for(lambda: listed() == sorted(referrers), timeout=30), listed()
    _wait_jobs_empty(source)
    # Damage the index on the downstream: three entries left.
    damaged = requests.get(fallback, headers=accept).json()
    damaged["manifests"] = damaged["manifests"][:3]
    assert requests.put(fallback, data=requests.compat.json.dumps(damaged),
                        headers={"Content-Type": "application/vnd.oci.image.index.v1+json"}).status_code == 201
    assert len(listed()) == 3
    dry = scrub(source, "scrub", "--replicate", "--dry-run")
    assert f"EnqueueReplicationReferrers downstream=dist namespace={ns} subject={subject}" in dry.stdout
    res = scrub(source, "replicate")
    assert res.returncode == 0, res.stderr + res.stdout
    assert listed() == sorted(referrers)
    again = scrub(source, "scrub", "--replicate", "--dry-run")
    assert "EnqueueReplicationReferrers" not in again.stdout
