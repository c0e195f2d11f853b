"""Replication status over real servers: every state a tag can be in on a downstream, and
``?wait=`` long polls that return when the state changes, time out with the not-yet status, and
cost the server no capacity.

Where the order matters the consumers are held (``[global.job_queue]``, and a worker the test
starts and stops), so "pending" is observed before the job runs, never raced.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import threading
import time

import requests

from ..conftest import ROOT, wait_for
from ..api.helpers import push_image
from .conftest import remote_digest, source_config
from .test_failures import OCI, _locked_peer, _small_manifest

HELD = """
[global.job_queue]
max_attempts = 5
retry_backoff_min_ms = 50
retry_backoff_max_ms = 200
"""


def status(server, ns: str, tag: str | None = None, timeout: float = 60, **params):
    path = f"/_ext/{ns}/_replication" + (f"/{tag}" if tag else "")
    r = requests.get(server.url + path, params=params, timeout=timeout)
    assert r.status_code in (200, 202), (r.status_code, r.text)
    return r.status_code, r.json()


def view(server, ns: str, tag: str, **params) -> dict:
    _, doc = status(server, ns, tag, **params)
    (only,) = doc["downstreams"]
    return only


def push(server, ns: str, tag: str, seed: str) -> str:
    body, d = _small_manifest(server, ns, seed)
    r = requests.put(server.v2(f"{ns}/manifests/{tag}"), data=body, headers={"Content-Type": OCI})
    assert r.status_code == 201, r.text
    return d


def in_flight(server) -> float:
    for line in requests.get(server.url + "/metrics", timeout=10).text.splitlines():
        if line.startswith("http_requests_in_flight "):
            return float(line.split()[1])
    return 0.0


def author_time(server, ns: str, tag: str) -> str | None:
    for entry in requests.get(server.url + f"/_ext/{ns}/_tags", timeout=10).json()["tags"]:
        if entry["name"] == tag:
            return entry.get("created_at") or entry.get("deleted_at")
    return None


class Worker:
    """An ``angos worker`` for ``server`` (held consumers: the test decides when jobs run)."""

    def __init__(self, server):
        self.server = server
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "angos.cli", "-c", str(server.config_path), "worker", "--queue", "replication"],
            cwd=server.workdir, stdout=open(server.workdir / "worker.log", "ab"), stderr=subprocess.STDOUT,
            start_new_session=True, env=dict(os.environ, PYTHONPATH=str(ROOT)))

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        assert self.proc.wait(30) == 0

    def __enter__(self) -> "Worker":
        return self

    def __exit__(self, *exc) -> None:
        if self.proc.poll() is None:
            self.stop()


def drain(server, timeout: float = 60) -> None:
    """Run one worker until ``server``'s replication queue is empty."""
    def idle():
        r = requests.get(server.url + "/_ext/_jobs?queue=replication", timeout=10)
        return not r.json()["jobs"]

    with Worker(server):
        wait_for(idle, timeout=timeout, what=f"the queue of {server.url} to drain")


class Waiter(threading.Thread):
    """One ``?wait=`` request in the background."""

    def __init__(self, server, ns: str, tag: str | None, wait: str, **params):
        super().__init__(daemon=True)
        self.args = (server, ns, tag, wait, params)
        self.response = None
        self.error = None
        self.start()

    def run(self) -> None:
        server, ns, tag, wait, params = self.args
        path = f"/_ext/{ns}/_replication" + (f"/{tag}" if tag else "")
        try:
            self.response = requests.get(server.url + path, params=dict(params, wait=wait), timeout=400)
        except requests.RequestException as exc:
            self.error = exc


def waiting(server, n: int) -> None:
    """Positive signal that ``n`` long polls are being served (plus the metrics request itself)."""
    wait_for(lambda: in_flight(server) >= n + 1, timeout=30, what=f"{n} requests in flight")


def test_a_push_is_pending_until_its_job_runs_and_a_waiter_returns_when_it_is_in_sync(angos_factory):
    peer = angos_factory()
    source = angos_factory(config_text=source_config({"name": "peer", "url": peer.url}, extra=HELD))
    ns = "nginx/app"
    d = push(source, ns, "v1", "one")
    code, doc = status(source, ns, "v1")
    assert code == 202 and doc["in_sync"] is False
    assert (doc["digest"], doc["deleted"], doc["author_time"]) == (d, False, author_time(source, ns, "v1"))
    (v,) = doc["downstreams"]
    assert (v["downstream"], v["state"], v["since"]) == ("peer", "pending", doc["author_time"])

    waiter = Waiter(source, ns, "v1", "300s")
    waiting(source, 1)
    with Worker(source):
        waiter.join(120)
        # The answer came well inside its 300 s, and it is 200: only a state that became in sync
        # answers 200 (a wait that ran out answers 202).
        assert not waiter.is_alive() and waiter.error is None
        assert waiter.response.status_code == 200, waiter.response.text
        (v,) = waiter.response.json()["downstreams"]
        assert (v["state"], v["remote_digest"]) == ("in_sync", d)
        assert remote_digest(peer, ns, "v1") == d
    # The tag moves on: pending at once, since the new write's author time, with no job run yet.
    d2 = push(source, ns, "v1", "two")
    code, doc = status(source, ns, "v1")
    assert code == 202 and doc["digest"] == d2
    assert (doc["downstreams"][0]["state"], doc["downstreams"][0]["since"]) == ("pending", doc["author_time"])
    drain(source)
    assert status(source, ns, "v1")[0] == 200


def test_a_wait_that_runs_out_answers_the_state_it_has_with_the_not_yet_status(angos_factory):
    source = angos_factory(config_text=source_config(
        {"name": "peer", "url": "http://127.0.0.1:9"}, extra=HELD + "\n[global.replication]\nmax_status_wait_secs = 2\n"))
    ns = "nginx/app"
    push(source, ns, "v1", "one")
    started = time.monotonic()
    code, doc = status(source, ns, "v1", wait="1s")
    assert time.monotonic() - started >= 1.0  # it did wait
    assert code == 202 and doc["downstreams"][0]["state"] == "pending"
    # A longer wait than the server allows is cut to max_status_wait_secs (the request returns
    # although it asked for an hour), still with the state and the not-yet status.
    code, doc = status(source, ns, None, wait="1h", timeout=120)
    assert code == 202 and doc["tags"][0]["downstreams"][0]["state"] == "pending"
    for bad in ("soon", "-1s", "1" * 40):
        r = requests.get(source.url + f"/_ext/{ns}/_replication/v1", params={"wait": bad}, timeout=10)
        assert r.status_code == 400 and r.json()["errors"][0]["code"] == "UNSUPPORTED", bad
    r = requests.get(source.url + f"/_ext/{ns}/_replication/v1", params={"downstream": "nope"}, timeout=10)
    assert r.status_code == 400 and "nope" in r.json()["errors"][0]["message"]
    assert status(source, ns, "v1", downstream="peer")[1]["downstreams"][0]["downstream"] == "peer"
    r = requests.get(source.url + f"/_ext/{ns}/_replication/nope", timeout=10)
    assert r.status_code == 404 and r.json()["errors"][0]["code"] == "MANIFEST_UNKNOWN"
    r = requests.get(source.url + "/_ext/nginx/empty/_replication", timeout=10)
    assert r.status_code == 404 and r.json()["errors"][0]["code"] == "NAME_UNKNOWN"


def test_listing_pages_every_tag_and_tombstone(angos_factory):
    source = angos_factory(config_text=source_config({"name": "peer", "url": "http://127.0.0.1:9"}, extra=HELD))
    ns = "nginx/many"
    for i in range(5):
        push(source, ns, f"t{i}", f"seed{i}")
    assert requests.delete(source.v2(f"{ns}/manifests/t4")).status_code == 202
    seen, url = [], source.url + f"/_ext/{ns}/_replication?n=2"
    while url:
        r = requests.get(url, timeout=10)
        assert r.status_code == 202
        page = r.json()["tags"]
        assert len(page) <= 2
        seen += [(t["tag"], t["deleted"], t["downstreams"][0]["state"]) for t in page]
        nxt = r.links.get("next", {}).get("url")
        url = source.url + nxt if nxt else None
    assert seen == [(f"t{i}", i == 4, "pending") for i in range(5)]


def test_down_while_the_downstream_is_stopped_then_in_sync_when_it_returns(angos_factory):
    peer = angos_factory(start=False)
    source = angos_factory(config_text=source_config({"name": "peer", "url": f"http://127.0.0.1:{peer.port}"}))
    ns = "nginx/outage"
    d = push(source, ns, "v1", "one")
    v = wait_for(lambda: (v := view(source, ns, "v1"))["state"] == "down" and v, timeout=30, what="state down")
    assert v["since"] and "refused" in v["error"].lower()
    overview = requests.get(source.url + "/_ext/_replication/downstreams", timeout=10).json()["downstreams"]
    assert [(o["downstream"], o["state"]) for o in overview] == [("peer", "down")]
    assert overview[0]["since"] == v["since"]
    # A second push while it is down is down too once its job has been deferred.
    push(source, ns, "v2", "two")
    wait_for(lambda: view(source, ns, "v2")["state"] == "down", timeout=30, what="v2 down")

    waiter = Waiter(source, ns, None, "300s")
    waiting(source, 1)
    peer.start()
    waiter.join(120)
    assert not waiter.is_alive() and waiter.error is None and waiter.response.status_code == 200
    assert [t["downstreams"][0]["state"] for t in waiter.response.json()["tags"]] == ["in_sync", "in_sync"]
    assert remote_digest(peer, ns, "v1") == d
    overview = requests.get(source.url + "/_ext/_replication/downstreams", timeout=10).json()["downstreams"]
    assert overview[0]["state"] == "up" and overview[0]["last_success"]


def test_superseded_names_what_the_downstream_holds_then_converges(mesh):
    a, b = mesh(2, extra=HELD)
    ns = "nginx/race"
    push(a, ns, "v1", "older")
    time.sleep(0.01)  # the behaviour under test: b's write has the strictly later author time
    newer = push(b, ns, "v1", "newer")
    drain(a)  # a's older write reaches b first and loses there
    code, doc = status(a, ns, "v1")
    (v,) = doc["downstreams"]
    assert code == 202 and v["downstream"] == "instance-b" and v["state"] == "superseded"
    assert (v["remote_digest"], v["remote_deleted"], v["remote_author_time"]) == (
        newer, False, author_time(b, ns, "v1"))
    drain(b)  # b's newer write reaches a: a's tag changes, and its own job for it is pending
    code, doc = status(a, ns, "v1")
    assert doc["digest"] == newer and doc["downstreams"][0]["state"] == "pending"
    drain(a)
    code, doc = status(a, ns, "v1")
    assert code == 200 and doc["downstreams"][0]["state"] == "in_sync"
    assert status(b, ns, "v1")[0] == 200


def test_failed_with_the_error_when_the_downstream_refuses(angos_factory):
    peer = _locked_peer(angos_factory, "identity.id == 'replicator' && request.action != 'put-manifest'")
    source = angos_factory(config_text=source_config(
        {"name": "peer", "url": peer.url, "username": "replicator", "password": "s3cret"},
        extra="[global.replication]\nmax_attempts = 2\nretry_backoff_min_ms = 50\nretry_backoff_max_ms = 100\n"))
    ns = "nginx/refused"
    push(source, ns, "v1", "one")
    v = wait_for(lambda: (v := view(source, ns, "v1"))["final"] and v, timeout=30, what="the last attempt")
    assert (v["state"], v["attempts"], v["max_attempts"]) == ("failed", 2, 2)
    assert "403" in v["error"] and "DENIED" in v["error"]
    overview = requests.get(source.url + "/_ext/_replication/downstreams", timeout=10).json()["downstreams"]
    assert "403" in overview[0]["last_error"] and overview[0]["state"] == "up"
    # Dead-lettered: only an operator can change it, so a wait answers at once (300 s asked, 120 s
    # of patience), and the CLI says why.
    code, doc = status(source, ns, "v1", wait="300s", timeout=120)
    assert code == 202 and doc["downstreams"][0]["state"] == "failed"
    from .test_status_cli import cli

    res = cli(f"{ns}:v1", "--wait", "5m", env={"ANGOS_URL": source.url})
    assert res.returncode == 1, res.stderr
    assert res.stdout.startswith(f"{ns}:v1 not in sync: peer failed since {v['since']} after 2 attempt(s) (PUT ")
    assert "403 DENIED" in res.stdout


def test_unsupported_for_a_tag_delete_on_distribution_and_a_wait_does_not_sit_it_out(
        angos_factory, docker_registry_factory):
    dist = docker_registry_factory()
    source = angos_factory(config_text=source_config({"name": "dist", "url": dist.url}))
    ns = "nginx/dist"
    push(source, ns, "v1", "one")
    assert status(source, ns, "v1", wait="60s")[0] == 200
    assert requests.delete(source.v2(f"{ns}/manifests/v1")).status_code == 202
    # 300 s asked, 120 s of patience: it answers because nothing can change any more.
    code, doc = status(source, ns, "v1", wait="300s", timeout=120)
    (v,) = doc["downstreams"]
    assert code == 202 and doc["deleted"] is True and doc["digest"] is None
    assert v["state"] == "unsupported" and "400" in v["error"]


def test_a_redis_queue_wakes_waiters_through_pub_sub(angos_factory, redis_server):
    peer = angos_factory()
    held = f'\n[global.job_queue]\nbackend = "redis"\nurl = "{redis_server}"\n'
    source = angos_factory(config_text=source_config({"name": "peer", "url": peer.url}, extra=held))
    ns = "nginx/redis"
    push(source, ns, "v1", "one")
    assert status(source, ns, "v1")[0] == 202
    waiter = Waiter(source, ns, "v1", "300s")
    waiting(source, 1)
    with Worker(source):
        waiter.join(120)
    assert not waiter.is_alive() and waiter.error is None and waiter.response.status_code == 200


def test_fifty_waiters_do_not_stop_one_worker_from_serving_pulls(angos_factory):
    text = source_config({"name": "peer", "url": "http://127.0.0.1:9"}, extra=HELD)
    source = angos_factory(config_text=text.replace("port = @PORT@", "port = @PORT@\nworkers = 1"))
    ns = "nginx/busy"
    digest, body, media_type, blobs = push_image(source, ns, tag="v1")
    waiters = [Waiter(source, ns, "v1", "300s") for _ in range(50)]
    waiting(source, 50)
    manifest = requests.get(source.v2(f"{ns}/manifests/v1"), headers={"Accept": media_type}, timeout=10)
    assert manifest.status_code == 200 and manifest.content == body
    blob = requests.get(source.v2(f"{ns}/blobs/{blobs[-1]}"), timeout=10)
    assert blob.status_code == 200 and "sha256:" + hashlib.sha256(blob.content).hexdigest() == blobs[-1]
    assert in_flight(source) >= 51 and all(w.is_alive() for w in waiters)  # they waited through it
    # Stopping the server answers them at once with what they have, instead of holding the stop.
    assert source.stop(timeout=60) == 0
    for w in waiters:
        w.join(30)
        assert w.error is None and w.response.status_code == 202, w.error
        assert w.response.json()["downstreams"][0]["state"] == "pending"


def test_the_policy_sees_its_own_action(angos_factory):
    rule = ("request.action != 'get-replication-status' || (has(request.namespace) && "
            "request.namespace == 'nginx/open' && has(request.reference) && request.reference == 'v1')")
    text = source_config({"name": "peer", "url": "http://127.0.0.1:9"},
                         extra=HELD + f'\n[global.access_policy]\ndefault = "deny"\nrules = ["{rule}"]\n')
    source = angos_factory(config_text=text)
    push(source, "nginx/open", "v1", "one")
    push(source, "nginx/open", "v2", "two")
    assert requests.get(source.url + "/_ext/nginx/open/_replication/v1", timeout=10).status_code == 202
    for path in ("/_ext/nginx/open/_replication/v2", "/_ext/nginx/open/_replication",
                 "/_ext/_replication/downstreams"):
        assert requests.get(source.url + path, timeout=10).status_code == 401, path


def test_on_s3_the_records_live_in_the_bucket(angos_factory, moto_server):
    import boto3

    from ..conftest import make_bucket, s3_source_config

    bucket = make_bucket(moto_server)
    peer = angos_factory()
    # S3 only, one worker, the default process-local lock: the drain runs inside the web worker
    # that also holds the waiters.
    source = angos_factory(config_text=s3_source_config(moto_server, bucket, peer.url))
    ns = "nginx/s3"
    d = push(source, ns, "v1", "one")
    code, doc = status(source, ns, "v1", wait="60s")
    assert code == 200 and doc["downstreams"][0]["remote_digest"] == d
    client = boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1", aws_access_key_id="test",
                          aws_secret_access_key="test")
    keys = {o["Key"] for o in client.list_objects_v2(Bucket=bucket, Prefix="reg/").get("Contents", ())}
    assert f"reg/repositories/{ns}/_replication/peer/v1" in keys
    assert "reg/_replication/downstreams/peer" in keys
