"""What is specific to the job store in the S3 metadata store (no ``[global.job_queue]``):
jobs are objects under ``<prefix>_jobs/`` in the bucket, survive the loss of the box's local
wake-up database, are shared safely by several boxes, and keep due times, dead letters and
retries. Real moto S3. Another "box" is processes of its own with their own ``$ANGOS_JOBS_DIR``
(an ``angos worker --in-process`` drain, a :class:`~tests.queue.conftest.Producer`), sharing
only the bucket with this one."""

from __future__ import annotations

import shutil
import time

import boto3
import pytest

from angos.queue.envelope import STORAGE_KEY
from tests.conftest import make_bucket, wait_for
from tests.queue.conftest import Producer, QueueEnv, read_lines


@pytest.fixture
def s3env(tmp_path, monkeypatch, moto_server):
    (tmp_path / "box").mkdir()
    monkeypatch.setenv("ANGOS_JOBS_DIR", str(tmp_path / "box" / "_jobs"))
    env = QueueEnv(tmp_path, "s3", None, (moto_server, make_bucket(moto_server)))
    yield env
    env.close()


def _keys(env, prefix="meta/_jobs/"):
    endpoint, bucket = env.s3
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="test",
                          aws_secret_access_key="test")
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return sorted(o["Key"] for page in pages for o in page.get("Contents", ()))



def _ends(path):
    return [line for line in read_lines(path) if line[0] == "end"]


def test_jobs_are_objects_under_the_metadata_prefix_and_leave_when_done(s3env):
    q = s3env.queue()
    assert q.submit("test.record", "repo/a:1", {"dir": str(s3env.out), "name": "a"})
    assert q.submit("test.record", "repo/a:1", {"dir": str(s3env.out), "name": "a"}) is False
    (job,) = q.list_pending()[0]
    keys = _keys(s3env)
    assert f"meta/_jobs/pending/replication/{job['storage_key']}" in keys
    markers = [k for k in keys if k.startswith("meta/_jobs/keys/replication/")]
    assert len(markers) == 1 and markers[0].endswith(".pending")
    name = markers[0].rsplit("/", 1)[1].split(".")[0]
    assert len(name) == 64 and set(name) <= set("0123456789abcdef")  # a hash: safe for any lock_key
    assert not any(k.startswith("meta/_jobs/pending/cache/") for k in keys)
    # Only wake-ups are local: the SQLite file under $ANGOS_JOBS_DIR holds no job table.
    import sqlite3

    db = s3env.dir / "box" / "_jobs" / "pending" / "replication" / "queue.db"
    tables = {r[0] for r in sqlite3.connect(db).execute("select name from sqlite_master where type='table'")}
    assert "angos_jobs" not in tables and "task" in tables
    assert q.run_next() == "succeeded"
    assert _keys(s3env) == []  # job and markers gone


def test_pending_jobs_survive_a_wiped_local_jobs_dir_and_run_in_a_new_drain(s3env):
    q = s3env.queue()
    for i in range(3):
        assert q.submit("test.record", f"survivor-{i}", {"dir": str(s3env.out)})
    q.close()
    shutil.rmtree(s3env.dir / "box")  # the box lost its disk (wake-ups included)
    (s3env.dir / "box").mkdir()
    s3env.worker("--queue", "replication")  # a fresh drain: top_up finds the jobs on S3
    wait_for(lambda: all(_ends(s3env.out / f"survivor-{i}.log") for i in range(3)), what="the jobs to run")
    wait_for(lambda: q.list_pending() == ([], None), what="an empty queue")


def _box(env, name: str) -> dict:
    """The environment of another box's processes: its own local wake-up database (the box's
    disk exists; a drain never creates a missing data root)."""
    (env.dir / name).mkdir(exist_ok=True)
    return {"ANGOS_JOBS_DIR": str(env.dir / name / "_jobs")}


def _wakeups(env, name: str) -> int:
    """Wake-ups waiting in box ``name``'s local database (0 once its drain has popped them)."""
    import sqlite3

    db = env.dir / name / "_jobs" / "pending" / "replication" / "queue.db"
    if not db.exists():
        return -1
    with sqlite3.connect(db, timeout=5) as conn:
        return conn.execute("select count(*) from task").fetchone()[0]


def _runs(path) -> list[list[str]]:
    """``start``/``end`` lines of test.record or test.gate; asserts no two runs ever overlapped."""
    lines = read_lines(path)
    assert [line[0] for line in lines] == ["start", "end"] * (len(lines) // 2), lines  # never overlapping
    for start, end in zip(lines[::2], lines[1::2]):
        assert start[3] == end[3], (start, end)  # each end belongs to the run that started just before
    return lines


def test_two_boxes_coalesce_and_never_run_one_lock_key_at_once(s3env):
    payload = {"dir": str(s3env.out), "name": "shared", "sleep": 0.05}
    go = s3env.dir / "go"
    # Eight concurrent submits of one key from two producer processes (two boxes, four threads each).
    producers = [Producer(s3env, "test.record", "shared", payload, "--threads", "4", "--go", str(go),
                          env=_box(s3env, box)) for box in ("box-a", "box-b")]
    go.touch()
    results = [r for p in producers for r in p.results()]
    assert sorted(results) == [False] * 7 + [True]  # one pending job, whatever box enqueued
    # Both boxes drain (a worker process each) while both keep enqueueing the same key.
    workers = [s3env.worker("--queue", "replication", env=_box(s3env, box)) for box in ("box-a", "box-b")]
    # Once a worker has claimed the first job, the next enqueue must create a new one (the key is
    # no longer pending); before that, every enqueue would rightly coalesce into it.
    wait_for(lambda: read_lines(s3env.out / "shared.log"), what="the first run to start")
    producers = [Producer(s3env, "test.record", "shared", payload, "--count", "6", "--every", "0.03",
                          env=_box(s3env, box)) for box in ("box-a", "box-b")]
    for p in producers:
        assert any(p.results())  # some enqueues landed while a run was in progress: new runs
    q = s3env.queue()
    wait_for(lambda: q.list_pending() == ([], None), what="the key to drain")
    lines = _runs(s3env.out / "shared.log")
    assert len(lines) >= 4  # the first job and at least one enqueued during a run
    assert {line[2] for line in lines} <= {str(w.pid) for w in workers}
    for w in workers:
        assert w.stop() == 0


def test_an_enqueue_during_a_run_schedules_exactly_one_more_run_across_boxes(s3env):
    payload = {"dir": str(s3env.out), "name": "gated"}
    a = s3env.worker("--queue", "replication", env=_box(s3env, "box-a"))
    assert Producer(s3env, "test.gate", "gated", payload, env=_box(s3env, "box-a")).results() == [True]
    wait_for(lambda: read_lines(s3env.out / "gated.log"), what="the first run")
    # Box b enqueues while box a runs the key: the running job does not absorb it ...
    assert Producer(s3env, "test.gate", "gated", payload, env=_box(s3env, "box-b")).results() == [True]
    # ... and box a's next enqueue coalesces into that pending job.
    assert Producer(s3env, "test.gate", "gated", payload, env=_box(s3env, "box-a")).results() == [False]
    # Box b's drain takes its wake-up and finds the key running on box a: it must not start it.
    b = s3env.worker("--queue", "replication", env=_box(s3env, "box-b"))
    wait_for(lambda: _wakeups(s3env, "box-b") == 0, what="box b's drain to spend its wake-up")
    assert len(read_lines(s3env.out / "gated.log")) == 1
    (s3env.out / "gated.go").touch()
    q = s3env.queue()
    wait_for(lambda: len(read_lines(s3env.out / "gated.log")) == 4 and q.list_pending() == ([], None),
             what="exactly one more run")
    lines = _runs(s3env.out / "gated.log")
    assert [line[0] for line in lines] == ["start", "end", "start", "end"]
    assert lines[0][2] == str(a.pid)
    for w in (a, b):
        assert w.stop() == 0
    assert len(read_lines(s3env.out / "gated.log")) == 4


def test_retry_backoff_and_a_delayed_enqueue_never_run_early(s3env):
    # Deterministic under any load: every run is compared with the due time its job carried
    # (read from the store, or the backoff measured from the previous attempt's own start),
    # never with how long the test thinks S3 took. The retry settings reach the drain through
    # [global.replication], which applies without [global.job_queue].
    s3env.configure(extra="[global.replication]\nmax_attempts = 3\nretry_backoff_min_ms = 600\n"
                          "retry_backoff_max_ms = 600\n")
    q = s3env.queue()
    q.submit("test.flaky", "flaky", {"dir": str(s3env.out), "succeed_after": 1})
    before = time.time()
    q.submit("test.record", "later", {"dir": str(s3env.out)}, delay=1.0)
    (listed,) = [j for j in q.list_pending()[0] if j["lock_key"] == "later"]
    later = q.get(listed["storage_key"])[0]
    assert later.not_before >= before + 1.0
    # Another box drains: it learns of both jobs from the bucket alone.
    s3env.worker("--queue", "replication", env=_box(s3env, "box-b"))
    wait_for(lambda: any(line[0] == "done" for line in read_lines(s3env.out / "flaky.log"))
             and any(line[0] == "end" for line in read_lines(s3env.out / "later.log")), what="both jobs")
    starts = [float(line[1]) for line in read_lines(s3env.out / "later.log") if line[0] == "start"]
    attempts = [(float(line[1]), int(line[2])) for line in read_lines(s3env.out / "flaky.log")
                if line[0] == "attempt"]
    assert len(starts) == 1 and starts[0] >= later.not_before
    assert [n for _, n in attempts] == [0, 1]
    assert attempts[1][0] - attempts[0][0] >= 0.6  # the backoff, counted from the failure
    wait_for(lambda: q.list_pending() == ([], None), what="an empty queue")


def test_dead_letter_then_retry_and_delete_through_the_store(s3env):
    s3env.configure("max_attempts = 2\nretry_backoff_min_ms = 10\nretry_backoff_max_ms = 10\n")
    q = s3env.queue()
    fix = s3env.out / "fixed"
    q.submit("test.flaky", "doomed", {"dir": str(s3env.out), "fixed_by": str(fix)})
    assert q.run_next() == "retried"
    wait_for(lambda: q.run_next() == "dead_lettered", what="the dead letter")
    (failed,), more = q.list_failed()
    key = failed["storage_key"]
    assert more is None and STORAGE_KEY.match(key) and failed["attempts"] == 2
    assert f"meta/_jobs/failed/replication/{key}" in _keys(s3env)
    assert q.get(key)[1] == "failed" and q.list_pending() == ([], None)
    assert q.store.count_failed(100) == 1
    fix.touch()
    assert q.retry_failed(key) is True
    assert q.retry_failed(key) is False  # already retried
    env, state = q.get(key)
    assert state == "pending" and env.attempts == 0
    assert q.run_next() == "succeeded"
    assert q.list_failed() == ([], None) and q.get(key) is None
    # delete: pending and failed jobs, each exactly once
    q.submit("test.flaky", "refused", {"dir": str(s3env.out), "terminal": True})
    assert q.run_next() == "dead_lettered"
    q.submit("test.record", "waiting", {}, delay=60)
    pending_key = q.list_pending()[0][0]["storage_key"]
    failed_key = q.list_failed()[0][0]["storage_key"]
    assert q.delete_pending(failed_key) is False and q.delete_failed(pending_key) is False
    assert q.delete_pending(pending_key) is True and q.delete_pending(pending_key) is False
    assert q.delete_failed(failed_key) is True and q.delete_failed(failed_key) is False
    assert q.submit("test.record", "waiting", {}, delay=60) is True  # the deleted job no longer coalesces
    assert [k for k in _keys(s3env) if "/failed/" in k] == []


def test_a_stale_run_marker_left_by_a_crash_does_not_block_the_key(s3env):
    q = s3env.queue()
    q.submit("test.record", "crashy", {"dir": str(s3env.out)})
    now = time.time()
    job = q.store.claim_next("elsewhere/1/1/x", now, now + 30)
    # The owner dies between finishing and releasing its run marker: its job is gone, the marker stays.
    store = q.store
    store._update(store.pending_dir + job.storage_key, lambda d: store_delete())
    assert any(k.endswith(".running") for k in _keys(s3env))
    assert q.submit("test.record", "crashy", {"dir": str(s3env.out)}) is True
    assert q.run_next() == "succeeded"  # the stale marker was recognised and replaced
    assert len(_ends(s3env.out / "crashy.log")) == 1


def store_delete():
    from angos.queue.s3_store import _DELETE

    return _DELETE
