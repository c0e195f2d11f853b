"""``/_ext/_jobs`` on a real server, with ``[global.job_queue]`` (SQLite and Redis) and without it
on an S3 metadata store (the server's drain keeps jobs in the bucket): listings with
pagination, retry and delete (409 while a job runs), error answers, and the queue-depth
gauges on /metrics."""

from __future__ import annotations

import re

import pytest
import requests

from tests.conftest import AngosServer, free_port, wait_for
from tests.queue.conftest import JOB_ENV, read_lines


@pytest.fixture
def server(qenv):
    port = free_port()
    qenv.configure("max_attempts = 2\nretry_backoff_min_ms = 20\npending_refresh_interval_secs = 5\n", port=port)
    srv = AngosServer(qenv.dir, qenv.config_text(
        "max_attempts = 2\nretry_backoff_min_ms = 20\npending_refresh_interval_secs = 5\n", port=port), port,
        env=JOB_ENV).start()
    yield srv
    srv.stop(timeout=10)


def jobs(server, path="", **params):
    return requests.get(f"{server.url}/_ext/_jobs{path}", params=params, timeout=10)


def test_listing_pages_through_pending_jobs_with_n_and_after(qenv, server):
    q = qenv.queue()
    keys = {q.submit("test.record", f"page-{i}", {"n": i}, delay=60) and f"page-{i}" for i in range(5)}
    seen, after, pages = [], None, 0
    while True:
        params = {"queue": "replication", "n": 2, **({"after": after} if after else {})}
        r = jobs(server, **params)
        assert r.status_code == 200, r.text
        body = r.json()
        pages += 1
        assert len(body["jobs"]) == (2 if "next" in body else 1)
        seen += body["jobs"]
        if "next" not in body:
            break
        assert body["next"] == body["jobs"][-1]["storage_key"]
        after = body["next"]
    assert pages == 3
    assert {j["lock_key"] for j in seen} == keys
    assert [j["storage_key"] for j in seen] == sorted(j["storage_key"] for j in seen)
    first = seen[0]
    assert set(first) >= {"storage_key", "id", "kind", "lock_key", "attempts", "max_attempts", "created_at",
                          "not_before"}
    assert (first["state"], first["attempts"], first["max_attempts"], first["kind"]) == ("pending", 0, 2,
                                                                                          "test.record")
    assert first["storage_key"].endswith(first["id"])
    assert jobs(server, queue="cache").json() == {"jobs": []}


def test_queue_depth_gauges_appear_on_metrics(qenv, server):
    q = qenv.queue()
    for i in range(3):
        q.submit("test.record", f"gauge-{i}", {}, delay=60)
    q.submit("test.flaky", "gauge-failed", {"dir": str(qenv.out), "terminal": True})
    assert q.run_next() == "dead_lettered"

    def gauges():
        text = requests.get(server.url + "/metrics", timeout=10).text
        found = dict(re.findall(r'^(angos_job_queue_(?:pending|failed))\{queue="replication"\} (\S+)$', text, re.M))
        return found if found == {"angos_job_queue_pending": "3.0", "angos_job_queue_failed": "1.0"} else None

    wait_for(gauges, timeout=20, what="the refreshed gauges")


def test_retry_via_api_resets_attempts_and_the_job_then_succeeds(qenv, server):
    q = qenv.queue()
    fix = qenv.out / "fixed"
    q.submit("test.flaky", "retry-me", {"dir": str(qenv.out), "fixed_by": str(fix)})
    worker = qenv.worker()
    failed = wait_for(lambda: jobs(server, "/failed", queue="replication").json()["failed"], what="dead letter")
    assert failed[0]["attempts"] == 2 and failed[0]["last_error"] == "RuntimeError: boom 1"
    fix.touch()
    key = failed[0]["storage_key"]
    r = requests.post(f"{server.url}/_ext/_jobs/failed/{key}/retry", params={"queue": "replication"}, timeout=10)
    assert r.status_code == 204, r.text
    log = qenv.out / "retry-me.log"
    wait_for(lambda: any(line[0] == "done" for line in read_lines(log)), what="the retried run")
    assert [line[2] for line in read_lines(log)] == ["0", "1", "0", "0"]  # attempts reset to 0
    assert jobs(server, "/failed", queue="replication").json() == {"failed": []}
    r = requests.post(f"{server.url}/_ext/_jobs/failed/{key}/retry", params={"queue": "replication"}, timeout=10)
    assert r.status_code == 404
    assert worker.stop() == 0


def test_delete_pending_and_failed_jobs_via_api(qenv, server):
    # Jobs run where the deployment runs them: a worker with [global.job_queue], the server's own
    # drain on S3 without it. The test only enqueues and reads the API.
    if qenv.backend != "s3":
        qenv.worker()
    q = qenv.queue()
    q.submit("test.record", "del-pending", {}, delay=60)
    q.submit("test.flaky", "del-failed", {"dir": str(qenv.out), "terminal": True})
    (failed,) = wait_for(lambda: jobs(server, "/failed", queue="replication").json()["failed"],
                         what="the dead letter")
    pending_key = jobs(server, queue="replication").json()["jobs"][0]["storage_key"]
    failed_key = failed["storage_key"]
    for kind, key in (("pending", pending_key), ("failed", failed_key)):
        url = f"{server.url}/_ext/_jobs/{kind}/{key}"
        assert requests.delete(url, params={"queue": "cache"}, timeout=10).status_code == 404  # other queue
        r = requests.delete(url, params={"queue": "replication"}, timeout=10)
        assert r.status_code == 204 and r.content == b""
        assert requests.delete(url, params={"queue": "replication"}, timeout=10).status_code == 404
    assert jobs(server, queue="replication").json() == {"jobs": []}
    assert jobs(server, "/failed", queue="replication").json() == {"failed": []}
    assert q.submit("test.record", "del-pending", {}, delay=60) is True  # the deleted job no longer coalesces


def test_deleting_a_running_job_answers_409_and_the_job_finishes(qenv, server):
    if qenv.backend != "s3":
        qenv.worker()
    q = qenv.queue()
    q.submit("test.gate", "del-running", {"dir": str(qenv.out), "name": "running"})
    wait_for(lambda: read_lines(qenv.out / "running.log"), what="the job to start")
    (job,) = jobs(server, queue="replication").json()["jobs"]
    assert job["state"] == "running"
    url = f"{server.url}/_ext/_jobs/pending/{job['storage_key']}"
    r = requests.delete(url, params={"queue": "replication"}, timeout=10)
    assert r.status_code == 409, r.text
    assert r.json()["errors"][0]["code"] == "CONFLICT"
    assert jobs(server, queue="replication").json()["jobs"] == [job]  # still there, still running
    (qenv.out / "running.go").touch()
    wait_for(lambda: jobs(server, queue="replication").json() == {"jobs": []}, what="the job to finish")
    assert [line[0] for line in read_lines(qenv.out / "running.log")] == ["start", "end"]  # it ran to the end
    assert requests.delete(url, params={"queue": "replication"}, timeout=10).status_code == 404


def test_unknown_queue_and_malformed_parameters_are_404_on_listings_and_400_on_mutations(server):
    key = "000001a21bbb3955-9821e8f2-de16-41e7-a5fa-da3a989a28d6"
    for path in ("", "/failed"):
        for params in ({"queue": "nope"}, {"queue": "replication", "n": "x"}, {"queue": "replication", "n": "0"},
                       {"queue": "replication", "after": "garbage"}):
            r = jobs(server, path, **params)
            assert r.status_code == 404, (path, params, r.text)
            assert r.json()["errors"][0]["message"]
    for method, path in (("post", f"/failed/{key}/retry"), ("delete", f"/failed/{key}"),
                         ("delete", f"/pending/{key}")):
        url = f"{server.url}/_ext/_jobs{path}"
        assert requests.request(method, url, params={"queue": "nope"}, timeout=10).status_code == 400
        assert requests.request(method, url, params={"queue": "replication"}, timeout=10).status_code == 404
        assert requests.request(method, f"{server.url}/_ext/_jobs{path.replace(key, 'not-a-key')}",
                                params={"queue": "replication"}, timeout=10).status_code == 404


def test_policy_sees_each_jobs_action_and_the_queue(angos_factory):
    # Allow-list: cache listings, failed listings without a queue, mutations on the replication queue.
    server = angos_factory(config_text="""
        [server]
        bind_address = "127.0.0.1"
        port = @PORT@
        workers = 1

        [global.access_policy]
        default = "deny"
        rules = ["request.action == 'list-jobs' && has(request.queue) && request.queue == 'cache'",
                 "request.action == 'list-failed-jobs' && !has(request.queue)",
                 "request.action in ['retry-job', 'delete-job'] && request.queue == 'replication'"]

        [blob_store.fs]
        root_dir = "@DATA@"
        """.replace("\n        ", "\n"), env=JOB_ENV)
    key = "000001a21bbb3955-9821e8f2-de16-41e7-a5fa-da3a989a28d6"
    assert jobs(server, queue="cache").status_code == 200
    assert jobs(server, queue="replication").status_code == 401
    assert jobs(server, "/failed").status_code == 200  # queue absent: defaults to cache
    assert jobs(server, "/failed", queue="cache").status_code == 401
    for method, path in (("post", f"/failed/{key}/retry"), ("delete", f"/failed/{key}"),
                         ("delete", f"/pending/{key}")):
        r = requests.request(method, f"{server.url}/_ext/_jobs{path}", params={"queue": "cache"}, timeout=10)
        assert r.status_code == 401 and "WWW-Authenticate" in r.headers
        r = requests.request(method, f"{server.url}/_ext/_jobs{path}", params={"queue": "replication"}, timeout=10)
        assert r.status_code == 404  # allowed through to the handler: the job does not exist
