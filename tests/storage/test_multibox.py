"""Scale-out: two servers (own ports, own local directories) on one S3 bucket
and one Redis (metadata locks + job queue), one ``angos worker``, and a third
instance as the replication downstream — the deployment of docs/scale-out.md.

Also: Redis stopped mid-run turns lock-needing requests and ``/readyz`` into
503s without corrupting anything or losing a queued job; an S3 endpoint that
ignores conditional writes makes the s3 lock strategy refuse to start.
"""

from __future__ import annotations

import hashlib
import re
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from tests.api.helpers import push_image, uniq
from tests.conftest import ANGOS, AngosServer, RedisProc, angos_config, free_port, make_bucket, wait_for

from .conftest import s3_server_config
from .s3_proxy import start_stripping_proxy

pytestmark = pytest.mark.slow



class Worker:
    def __init__(self, config_path: Path, workdir: Path):
        self.log_path = workdir / f"worker-{time.monotonic_ns()}.log"
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(ANGOS + ["-c", str(config_path), "worker"], cwd=workdir, stdout=self._log,
                                     stderr=subprocess.STDOUT, start_new_session=True)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, moto_server):
    redis = RedisProc(tmp_path_factory.mktemp("redis"), durable=True).start()
    down_dir = tmp_path_factory.mktemp("downstream")
    down_port = free_port()
    downstream = AngosServer(down_dir, angos_config(down_dir / "data", down_port, 1), down_port).start()
    bucket = make_bucket(moto_server)
    lock = f'[metadata_store.s3.lock_strategy.redis]\nurl = "{redis.url}"\nttl = 5\n'
    extra = f"""
[global.job_queue]
backend = "redis"
url = "{redis.url}"
retry_backoff_min_ms = 100
retry_backoff_max_ms = 500

[repository."mirror"]

[[repository."mirror".downstream]]
name = "c"
url = "{downstream.url}"
"""
    servers = []
    for name in ("a", "b"):
        workdir = tmp_path_factory.mktemp(f"box-{name}")
        port = free_port()
        servers.append(AngosServer(workdir, s3_server_config(port, moto_server, bucket, True, lock, extra=extra),
                                   port))
    for s in servers:
        s.start()
    worker = Worker(servers[0].config_path, servers[0].workdir)
    state = {"a": servers[0], "b": servers[1], "c": downstream, "redis": redis, "worker": worker,
             "config": servers[0].config_path}
    yield state
    state["worker"].stop()
    for s in servers:
        s.stop(timeout=10)
    downstream.stop(timeout=10)
    redis.stop()


def _tag_digest(server, ns: str, tag: str) -> str | None:
    r = requests.head(server.v2(f"{ns}/manifests/{tag}"), headers={"Accept": "*/*"})
    return r.headers.get("Docker-Content-Digest") if r.status_code == 200 else None


def _pending(server) -> list:
    return requests.get(server.url + "/_ext/_jobs", params={"queue": "replication"}).json()["jobs"]


def _failed(server) -> list:
    return requests.get(server.url + "/_ext/_jobs/failed", params={"queue": "replication"}).json()["failed"]


def test_push_through_one_server_pull_through_the_other(cluster):
    a, b = cluster["a"], cluster["b"]
    ns = uniq("mirror/app")
    digest, body, media_type, blobs = push_image(a, ns, "sha256", tag="v1")
    r = requests.get(b.v2(f"{ns}/manifests/v1"))
    assert r.status_code == 200 and r.content == body
    for blob in blobs:
        got = requests.get(b.v2(f"{ns}/blobs/{blob}"), headers={"X-Angos-No-Redirect": "1"})
        assert got.status_code == 200
        assert got.headers["Docker-Content-Digest"] == blob
    assert requests.get(b.v2(f"{ns}/tags/list")).json()["tags"] == ["v1"]


def test_concurrent_pushes_to_one_tag_across_both_servers_converge_and_replicate_once(cluster):
    a, b, c = cluster["a"], cluster["b"], cluster["c"]
    ns = uniq("mirror/race")

    def push(i: int) -> str:
        server = a if i % 2 else b
        return push_image(server, ns, "sha256", tag="race")[0]

    with ThreadPoolExecutor(20) as pool:
        pushed = list(pool.map(push, range(20)))
    assert len(set(pushed)) == 20
    final_a, final_b = _tag_digest(a, ns, "race"), _tag_digest(b, ns, "race")
    assert final_a == final_b and final_a in pushed
    assert requests.get(a.v2(f"{ns}/tags/list")).json()["tags"] == ["race"]
    for d in pushed:  # every revision is whole and readable through either box
        for server in (a, b):
            r = requests.get(server.v2(f"{ns}/manifests/{d}"), headers={"X-Angos-No-Redirect": "1"})
            assert r.status_code == 200 and r.headers["Docker-Content-Digest"] == d

    from_a = push_image(a, ns, "sha256", tag="from-a")[0]
    from_b = push_image(b, ns, "sha256", tag="from-b")[0]

    # Both servers enqueue into the shared Redis queue; the one worker drains it into C.
    wait_for(lambda: _tag_digest(c, ns, "race") == final_a and _tag_digest(c, ns, "from-a") == from_a
               and _tag_digest(c, ns, "from-b") == from_b and not _pending(a), what="replication to C")
    assert _failed(a) == [] and _pending(b) == []
    # Every job for this namespace ran to completion exactly once (Redis hands a job to one consumer).
    runs = {}
    for line in cluster["worker"].logs().splitlines():
        m = re.search(r"job (\S+) kind=replication\.sync lock_key=(\S+) attempt=\d+ (\w+)", line)
        if m and ns in m.group(2):
            runs.setdefault(m.group(1), []).append(m.group(3))
    assert runs and all(outcomes == ["succeeded"] for outcomes in runs.values()), runs


def test_redis_outage_fails_lock_needing_requests_with_503_and_loses_no_job(cluster):
    a, b, c, redis = cluster["a"], cluster["b"], cluster["c"], cluster["redis"]
    ns = uniq("mirror/outage")
    cluster["worker"].stop()  # hold jobs in the queue across the outage
    before, body, media_type, _ = push_image(a, ns, "sha256", tag="before")
    wait_for(lambda: len(_pending(a)) >= 1, what="the job to be queued")

    redis.stop()
    try:
        for server in (a, b):
            r = requests.get(server.url + "/readyz")
            assert r.status_code == 503
            assert r.json()["status"] == "unavailable" and r.json()["reason"]
        # A tag write needs the tag lock: refused, nothing half-written.
        r = requests.put(a.v2(f"{ns}/manifests/during"), data=body, headers={"Content-Type": media_type})
        assert r.status_code == 503, r.text
        assert r.json()["errors"][0]["code"] == "UNAVAILABLE"
        # Closing an upload needs the upload lock.
        start = requests.post(b.v2(f"{ns}/blobs/uploads/"))
        assert start.status_code == 202
        location = b.url + start.headers["Location"]
        sep = "&" if "?" in location else "?"
        r = requests.put(f"{location}{sep}digest=sha256:{hashlib.sha256(b'x').hexdigest()}", data=b"x")
        assert r.status_code == 503
        assert _tag_digest(a, ns, "before") == before  # reads still served, the tag untouched
    finally:
        redis.start()

    wait_for(lambda: requests.get(a.url + "/readyz").status_code == 200
               and requests.get(b.url + "/readyz").status_code == 200, what="readiness after Redis returned")
    after, _, _, _ = push_image(b, ns, "sha256", tag="after")
    assert _tag_digest(a, ns, "before") == before
    assert _tag_digest(a, ns, "during") is None
    cluster["worker"] = Worker(cluster["config"], a.workdir)
    wait_for(lambda: _tag_digest(c, ns, "before") == before and _tag_digest(c, ns, "after") == after,
               what="the queued jobs to reach C after the outage")
    assert _failed(a) == []


def test_s3_lock_strategy_refuses_to_start_on_an_endpoint_ignoring_conditional_writes(
        moto_server, tmp_path_factory):
    proxy, url = start_stripping_proxy(moto_server)
    try:
        workdir = tmp_path_factory.mktemp("no-cas")
        port = free_port()
        server = AngosServer(workdir, s3_server_config(port, url, make_bucket(moto_server), False, workers=1), port)
        proc = subprocess.run(ANGOS + ["-c", str(server.config_path), "server"], cwd=workdir, capture_output=True,
                              text=True, timeout=60)
        assert proc.returncode == 1
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and "does not honour conditional writes" in lines[0], proc.stderr
    finally:
        proxy.shutdown()


def test_readyz_follows_s3_reachability_and_requests_fail_503_meanwhile(tmp_path_factory):
    """A dedicated moto (S3 state is in memory: a restart comes back empty, the bucket is recreated)."""
    from tests.conftest import wait_http

    exe = Path(ANGOS[0]).parent / "moto_server"
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"

    def start_moto():
        proc = subprocess.Popen([str(exe), "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
        wait_http(endpoint + "/moto-api/", proc, timeout=30)
        return proc

    moto = start_moto()
    bucket = make_bucket(endpoint)
    workdir = tmp_path_factory.mktemp("s3-outage")
    sport = free_port()
    server = AngosServer(workdir, s3_server_config(sport, endpoint, bucket, False, workers=1), sport)
    try:
        server.start()
        assert requests.get(server.url + "/readyz").status_code == 200
        push_image(server, "outage/app", "sha256", tag="v1")
        moto.terminate()
        moto.wait(10)
        r = requests.get(server.url + "/readyz")
        assert r.status_code == 503 and "S3" in r.json()["reason"]
        r = requests.get(server.v2("outage/app/manifests/v1"))
        assert r.status_code == 503 and r.json()["errors"][0]["code"] == "UNAVAILABLE"
        moto = start_moto()
        make_bucket(endpoint, bucket)
        wait_for(lambda: requests.get(server.url + "/readyz").status_code == 200, what="readiness after S3 returned")
        assert push_image(server, "outage/app", "sha256", tag="v2")[0]
    finally:
        server.stop(timeout=10)
        moto.terminate()
        moto.wait(10)
