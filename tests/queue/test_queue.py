"""The queue's contract on both backends (SQLite file, real redis-server): run, coalesce,
rerun, back off, dead-letter, reclaim. Producers run in this process; consumers are
``angos worker`` processes, or ``JobQueue.run_next`` called here when a test needs to
control each step."""

from __future__ import annotations

import multiprocessing
import time


from angos import metrics as m
from angos.queue import backoff_secs
from tests.conftest import wait_for
from tests.queue.conftest import read_lines


def _ends(path):
    return [line for line in read_lines(path) if line[0] == "end"]


def test_enqueued_job_runs_in_a_worker_and_leaves_nothing_pending(qenv):
    q = qenv.queue()
    assert q.submit("test.record", "one", {"dir": str(qenv.out)}) is True
    qenv.worker("--queue", "replication")
    wait_for(lambda: _ends(qenv.out / "one.log"), what="the job to run")
    wait_for(lambda: q.list_pending() == ([], None), what="the job to leave the pending list")
    assert q.list_failed() == ([], None)


def test_worker_drains_only_the_queues_it_is_given(qenv):
    rep, cache = qenv.queue("replication"), qenv.queue("cache")
    rep.submit("test.record", "rep-job", {"dir": str(qenv.out)})
    cache.submit("test.record", "cache-job", {"dir": str(qenv.out)})
    w = qenv.worker("--queue", "cache")
    wait_for(lambda: _ends(qenv.out / "cache-job.log"), what="the cache job")
    assert w.stop() == 0
    assert not (qenv.out / "rep-job.log").exists()
    assert [j["lock_key"] for j in rep.list_pending()[0]] == ["rep-job"]


def _enqueue_many(args):
    backend_cfg_path, keys = args
    from angos.config import load_config
    from angos.queue.core import JobQueue

    q = JobQueue(load_config([backend_cfg_path]), "replication")
    return [q.submit("test.record", key, {"dir": "/nonexistent"}) for key in keys]


def test_concurrent_enqueues_from_8_processes_leave_exactly_one_pending_job_per_key(qenv):
    keys = [f"key-{i}" for i in range(25)]
    qenv.queue()  # create the store before the race, as a running server would have
    with multiprocessing.get_context("spawn").Pool(8) as pool:
        results = pool.map(_enqueue_many, [(str(qenv.config_path), keys)] * 8)
    created = [sum(r[i] for r in results) for i in range(len(keys))]
    assert created == [1] * len(keys)
    pending, nxt = qenv.queue().list_pending(n=1000)
    assert sorted(j["lock_key"] for j in pending) == sorted(keys)


def test_enqueue_of_a_pending_key_is_a_counted_dedup_hit(qenv):
    q = qenv.queue()
    hits = m.JOB_QUEUE_ENQUEUED.labels("replication", "hit")
    misses = m.JOB_QUEUE_ENQUEUED.labels("replication", "miss")
    h0, m0 = hits._value.get(), misses._value.get()
    assert q.enqueue("test.record", "dup", {"dir": str(qenv.out)}) is True
    assert q.enqueue("test.record", "dup", {"dir": str(qenv.out)}) is False
    assert (hits._value.get() - h0, misses._value.get() - m0) == (1, 1)


def test_enqueue_during_a_run_schedules_one_rerun_that_starts_after_the_first_ends(qenv):
    q = qenv.queue()
    payload = {"dir": str(qenv.out), "name": "gated"}
    log = qenv.out / "gated.log"
    assert q.submit("test.gate", "gated", payload)
    qenv.worker()
    wait_for(lambda: read_lines(log), what="the first run to start")
    assert q.submit("test.gate", "gated", payload) is True   # the first run is taken: a new run
    assert q.submit("test.gate", "gated", payload) is False  # that new run is pending: coalesced
    (qenv.out / "gated.go").touch()
    wait_for(lambda: len(_ends(log)) == 2, what="the rerun")
    events = [line[0] for line in read_lines(log)]
    assert events == ["start", "end", "start", "end"]  # never two runs of one key at once


def test_failed_runs_back_off_with_doubling_delays_capped_at_the_maximum(qenv):
    qenv.configure("max_attempts = 6\nretry_backoff_min_ms = 100\nretry_backoff_max_ms = 400\n")
    q = qenv.queue()
    q.submit("test.flaky", "flaky", {"dir": str(qenv.out)})
    delays = []
    for attempt in range(5):
        wait_for(lambda: (q.get(_only_key(q)) or (None, ""))[0].not_before <= time.time(), what="due time")
        # The store may hold the job back a little longer than its envelope's not_before: Redis
        # schedules "delay from now" by its own clock when the reschedule reaches it, later than
        # the moment the worker computed not_before (by the round trip; milliseconds on a loaded
        # machine). Claim until it is due there too; ``before`` is taken before the claiming call.
        claims = []

        def claimed():
            claims.append(time.time())
            return q.run_next()

        assert wait_for(claimed, timeout=10, interval=0.005, what="the job to be claimable") == "retried"
        before = claims[-1]
        after = time.time()
        env, state = q.get(_only_key(q))
        assert state == "pending" and env.attempts == attempt + 1
        expected = backoff_secs(attempt, 100, 400)
        # The delay is measured from a moment inside [before, after].
        assert env.not_before - after <= expected <= env.not_before - before
        delays.append(expected)
    assert delays == [0.1, 0.2, 0.4, 0.4, 0.4]


def _only_key(q):
    jobs, _ = q.list_pending()
    assert len(jobs) == 1
    return jobs[0]["storage_key"]


def test_job_dead_letters_after_max_attempts_with_its_last_error(qenv):
    qenv.configure("max_attempts = 3\nretry_backoff_min_ms = 20\nretry_backoff_max_ms = 40\n")
    q = qenv.queue()
    q.submit("test.flaky", "doomed", {"dir": str(qenv.out)})
    qenv.worker()
    failed = wait_for(lambda: q.list_failed()[0], what="the dead letter")
    assert len(failed) == 1
    job = failed[0]
    assert (job["lock_key"], job["attempts"], job["max_attempts"]) == ("doomed", 3, 3)
    assert job["last_error"] == "RuntimeError: boom 2"
    assert job["failed_at"] >= job["created_at"]
    assert [line[2] for line in read_lines(qenv.out / "doomed.log")] == ["0", "1", "2"]
    assert q.list_pending() == ([], None)


def test_terminal_error_dead_letters_at_once(qenv):
    q = qenv.queue()
    q.submit("test.flaky", "refused", {"dir": str(qenv.out), "terminal": True})
    qenv.worker()
    failed = wait_for(lambda: q.list_failed()[0], what="the dead letter")
    assert (failed[0]["attempts"], failed[0]["last_error"]) == (1, "TerminalJobError: refused for good")
    assert len(read_lines(qenv.out / "refused.log")) == 1


def test_a_later_success_of_a_lock_key_deletes_that_keys_dead_letters_only(qenv):
    q = qenv.queue()
    for key in ("fixed-later", "still-broken"):
        q.submit("test.flaky", key, {"dir": str(qenv.out), "terminal": True})
        assert q.run_next() == "dead_lettered"
    assert sorted(f["lock_key"] for f in q.list_failed()[0]) == ["fixed-later", "still-broken"]
    q.submit("test.flaky", "fixed-later", {"dir": str(qenv.out), "succeed_after": 0})
    assert q.run_next() == "succeeded"
    assert [f["lock_key"] for f in q.list_failed()[0]] == ["still-broken"]


def test_unknown_kind_fails_loudly_and_dead_letters(qenv):
    qenv.configure("max_attempts = 1\n")
    q = qenv.queue()
    q.submit("test.no-such-kind", "orphan", {})
    assert q.run_next() == "dead_lettered"
    failed = q.list_failed()[0]
    assert "no handler is registered for job kind 'test.no-such-kind'" in failed[0]["last_error"]


def test_job_of_an_owner_whose_lease_expired_runs_again_counting_the_lost_run(qenv):
    q = qenv.queue()
    q.submit("test.record", "leased", {"dir": str(qenv.out)})
    now = time.time()
    claimed = q.store.claim_next("elsewhere/1/1/x", now, now - 1)  # another host; its lease already ran out
    assert claimed is not None and q.run_next() is None  # taken: nobody else may run it meanwhile
    assert q.reclaim() == 1
    env, state = q.get(claimed.storage_key)
    assert state == "pending" and env.attempts == 1 and "stopped before it finished" in env.last_error
    wait_for(lambda: q.run_next() == "succeeded", what="the rerun")
    assert len(_ends(qenv.out / "leased.log")) == 1


def test_lock_keys_lists_waiting_running_and_dead_jobs_oldest_first_with_their_creation_time(qenv):
    q = qenv.queue()
    q.submit("test.flaky", "dead", {"dir": str(qenv.out), "terminal": True})
    assert q.run_next() == "dead_lettered"
    for key in ("a", "b", "c"):
        q.submit("test.record", key, {})
        time.sleep(0.002)  # distinct creation milliseconds, so "oldest first" has one answer
    q.submit("test.record", "later", {}, delay=3600)  # deferred jobs wait too: they are listed
    now = time.time()
    running = q.store.claim_next("elsewhere/1/1/x", now, now + 60)  # running jobs are listed too
    assert running.lock_key in ("a", "b", "c")
    created = {j["lock_key"]: j for j in q.list_pending(n=100)[0]}
    pending = q.lock_keys("pending")
    assert [k for k, _ in pending] == ["a", "b", "c", "later"]
    for key, at in pending:  # the creation time, to the millisecond, without reading the body
        env, _ = q.get(created[key]["storage_key"])
        assert at == int(env.created_at * 1000) / 1000
    assert [k for k, _ in q.lock_keys("pending", cap=2)] == ["a", "b"]
    assert [k for k, _ in q.lock_keys("failed")] == ["dead"]


def test_pending_and_failed_counts_saturate(qenv):
    q = qenv.queue()
    for i in range(7):
        q.submit("test.record", f"c{i}", {})
    q.submit("test.record", "later", {}, delay=3600)
    assert q.store.count_pending(time.time() + 60, 5) == 5
    assert q.store.count_pending(time.time() + 60, 10000) == 7  # the delayed job is past the horizon
    assert q.store.count_failed(10000) == 0
    # What the UI's queue tabs show: every pending job however far off, and the dead letters.
    assert q.counts() == (8, 0)
    assert q.counts(cap=5) == (5, 0)


def test_counts_include_dead_letters(qenv):
    q = qenv.queue()
    q.submit("test.flaky", "dead", {"dir": str(qenv.out), "terminal": True})
    assert q.run_next() == "dead_lettered"
    q.submit("test.record", "later", {}, delay=3600)
    assert q.counts() == (1, 1)


def test_killed_worker_job_runs_again_in_a_new_worker(qenv):
    q = qenv.queue()
    payload = {"dir": str(qenv.out), "name": "long"}
    log = qenv.out / "long.log"
    q.submit("test.gate", "long", payload)
    first = qenv.worker()
    wait_for(lambda: read_lines(log), what="the job to start")
    first.kill()  # kill -9 mid-job
    second = qenv.worker()
    wait_for(lambda: len(read_lines(log)) == 2, what="the new worker to start the job again")
    (qenv.out / "long.go").touch()
    wait_for(lambda: _ends(log), what="the job to finish")
    starts = [line for line in read_lines(log) if line[0] == "start"]
    assert [s[2] for s in starts] == [str(first.pid), str(second.pid)]
    assert _ends(log)[0][2] == str(second.pid)
    wait_for(lambda: q.list_pending() == ([], None), what="an empty queue")
    assert second.stop() == 0


def test_graceful_stop_lets_the_running_job_finish_then_exits_0(qenv):
    q = qenv.queue()
    log = qenv.out / "slow.log"
    q.submit("test.record", "slow", {"dir": str(qenv.out), "name": "slow", "sleep": 1.5})
    w = qenv.worker()
    wait_for(lambda: read_lines(log), what="the job to start")
    assert w.stop() == 0
    assert [line[0] for line in read_lines(log)] == ["start", "end"]
    assert q.list_pending() == ([], None)


def test_200_pending_jobs_all_complete_across_a_stop_and_restart(qenv):
    q = qenv.queue()
    keys = [f"r{i:03d}" for i in range(200)]
    for key in keys:
        assert q.submit("test.record", key, {"dir": str(qenv.out), "sleep": 0.01})
    first = qenv.worker()
    wait_for(lambda: sum(1 for k in keys if (qenv.out / f"{k}.log").exists()) >= 20, what="some progress")
    assert first.stop() == 0
    q.close()
    second = qenv.worker()
    wait_for(lambda: all(_ends(qenv.out / f"{k}.log") for k in keys), timeout=60, what="all 200 jobs")
    assert second.stop() == 0
    runs = [len(_ends(qenv.out / f"{k}.log")) for k in keys]
    assert runs == [1] * 200  # graceful stops let runs finish: nothing ran twice


def test_two_workers_run_500_jobs_each_exactly_once(qenv):
    q = qenv.queue()
    keys = [f"j{i:03d}" for i in range(500)]
    workers = [qenv.worker("--queue", "replication"), qenv.worker("--queue", "replication")]
    for key in keys:
        assert q.submit("test.record", key, {"dir": str(qenv.out)})
    wait_for(lambda: all(_ends(qenv.out / f"{k}.log") for k in keys), timeout=120, what="all 500 jobs")
    for w in workers:
        assert w.stop() == 0
    for key in keys:
        assert [line[0] for line in read_lines(qenv.out / f"{key}.log")] == ["start", "end"], key
    assert q.list_pending() == ([], None) and q.list_failed() == ([], None)


def test_reclaim_never_takes_over_a_job_whose_owner_renewed_its_lease(qenv):
    q = qenv.queue()
    q.submit("test.record", "renewed", {"dir": str(qenv.out)})
    owner = "elsewhere/1/1/x"
    seen_expired = time.time()
    claimed = q.store.claim_next(owner, seen_expired, seen_expired - 1)
    assert q.store.heartbeat(owner, time.time() + 30) == 1  # the owner was only slow: it renews
    # A reclaim that read the expired lease before the renewal must not win when it writes.
    retry = claimed.with_(attempts=1, not_before=time.time())
    assert q.store.reschedule(retry, owner, q._wake_msg(), seen_expired) == "lost"
    assert q.store.dead_letter(retry, owner, q._wake_msg(), seen_expired) is False
    assert q.reclaim() == 0
    assert q.get(claimed.storage_key)[1] == "running"


def test_worker_applies_a_changed_configuration_to_later_jobs_and_ignores_an_invalid_one(qenv):
    q = qenv.queue()
    worker = qenv.worker()
    counter = iter(range(10000))

    def repos_seen_by_next_job():
        key = f"cfg-{next(counter)}"
        q.submit("test.config", key, {"dir": str(qenv.out)})
        return wait_for(lambda: read_lines(qenv.out / f"{key}.log"), what="the job")[0][1:]

    assert repos_seen_by_next_job() == []
    qenv.configure(extra='[repository."added"]\n')
    wait_for(lambda: repos_seen_by_next_job() == ["added"], what="the reloaded configuration")
    qenv.config_path.write_text(qenv.config_path.read_text() + "\nnot valid toml [[[\n")
    wait_for(lambda: "configuration reload failed, keeping the previous one" in worker.logs(),
               what="the invalid file to be noticed")
    assert repos_seen_by_next_job() == ["added"]
