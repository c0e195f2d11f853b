"""Redis and S3 lock strategies against real redis-server and moto servers:
exclusion across managers (as across boxes), safe release, renewal while held,
503 when the backend is down, and refusal of an S3 endpoint that ignores
conditional writes."""

from __future__ import annotations

import threading
import time

import pytest

from angos.config import ConfigError, RedisLock, S3Lock
from angos.oci.errors import Unavailable
from angos.storage.locks import LockTimeout
from angos.storage.redis_locks import RedisLocks
from angos.storage.s3_locks import S3Locks
from tests.conftest import free_port, wait_for

from .conftest import s3_store
from .s3_proxy import start_stripping_proxy


@pytest.fixture(params=["redis", "s3"])
def two_managers(request):
    """Two independent lock managers sharing one backend, like two servers."""
    if request.param == "redis":
        url = request.getfixturevalue("redis_server")
        cfg = RedisLock(url=url, ttl=1, key_prefix="t", max_retries=3, retry_delay_ms=20)
        return RedisLocks(cfg), RedisLocks(cfg)
    endpoint = request.getfixturevalue("moto_server")
    bucket = request.getfixturevalue("s3_bucket")
    store = s3_store(endpoint, bucket)
    cfg = S3Lock(ttl_secs=9, max_retries=3, retry_delay_ms=20)
    return S3Locks(None, cfg, store=store), S3Locks(None, cfg, store=s3_store(endpoint, bucket, store.prefix))


def test_a_held_lock_excludes_the_other_manager_until_released(two_managers):
    a, b = two_managers
    with a.lock("tag:ns:latest"):
        with pytest.raises(LockTimeout):
            with b.lock("tag:ns:latest"):
                pass
        with b.lock("tag:ns:other"):  # other names are independent
            pass
    with b.lock("tag:ns:latest"):
        pass


def test_concurrent_read_modify_write_through_two_managers_loses_no_update(two_managers):
    a, b = two_managers
    patient = []
    for mgr in (a, b):
        mgr.cfg = type(mgr.cfg)(**{**mgr.cfg.__dict__, "max_retries": 2000, "retry_delay_ms": 5})
        patient.append(mgr)
    counter = {"n": 0}

    def work(mgr):
        for _ in range(10):
            with mgr.lock("counter"):
                n = counter["n"]
                time.sleep(0.001)  # widen the read-modify-write window the lock must protect
                counter["n"] = n + 1

    threads = [threading.Thread(target=work, args=(m,)) for m in patient for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert counter["n"] == 40


def test_redis_lock_is_renewed_while_held_beyond_its_ttl(redis_server):
    cfg = RedisLock(url=redis_server, ttl=1, key_prefix="renew", max_retries=2, retry_delay_ms=10)
    holder, other = RedisLocks(cfg), RedisLocks(cfg)
    with holder.lock("long"):
        time.sleep(2.5)  # well past the 1 s ttl: only renewal keeps it
        with pytest.raises(LockTimeout):
            with other.lock("long"):
                pass


def test_redis_release_never_deletes_a_lock_taken_over_after_expiry(redis_server):
    import redis

    cfg = RedisLock(url=redis_server, ttl=1, key_prefix="safe", max_retries=2, retry_delay_ms=10)
    mgr = RedisLocks(cfg)
    client = redis.Redis.from_url(redis_server)
    with mgr.lock("x"):
        # Simulate expiry and a takeover by another box while we still believe we hold it.
        client.set("safe:x", "someone-else")
    assert client.get("safe:x") == b"someone-else"


def test_redis_lock_fails_unavailable_when_redis_is_down():
    port = free_port()
    mgr = RedisLocks(RedisLock(url=f"redis://127.0.0.1:{port}/0", ttl=1, max_retries=2, retry_delay_ms=10))
    with pytest.raises(Unavailable):
        with mgr.lock("anything"):
            pytest.fail("must not enter the critical section without the lock")
    with pytest.raises(Unavailable):
        mgr.check()


def test_s3_lock_of_a_dead_holder_is_broken_after_it_expires(moto_server, s3_bucket):
    import json

    store = s3_store(moto_server, s3_bucket)
    mgr = S3Locks(None, S3Lock(ttl_secs=9, max_retries=3, retry_delay_ms=10), store=store)
    # A holder that died: its lock object expired a minute ago and is no longer renewed.
    store.put(mgr._key("stale"), json.dumps({"token": "dead", "expires": time.time() - 60}).encode())
    with mgr.lock("stale"):
        assert json.loads(store.get(mgr._key("stale")))["token"] != "dead"
    assert not store.exists(mgr._key("stale"))


def test_s3_lock_strategy_refuses_an_endpoint_that_ignores_conditional_writes(moto_server, s3_bucket):
    proxy, url = start_stripping_proxy(moto_server)
    try:
        with pytest.raises(ConfigError, match="does not honour conditional writes"):
            S3Locks(None, S3Lock(), store=s3_store(url, s3_bucket))
        # The same bucket straight through moto honours them.
        S3Locks(None, S3Lock(), store=s3_store(moto_server, s3_bucket))
    finally:
        proxy.shutdown()


def test_acquisitions_and_timeouts_are_counted_per_backend(two_managers):
    from prometheus_client import REGISTRY

    a, b = two_managers

    def sample(result):
        return REGISTRY.get_sample_value("lock_acquisitions_total", {"backend": a.backend, "result": result}) or 0

    acquired, timeouts = sample("acquired"), sample("timeout")
    with a.lock("metric"):
        with pytest.raises(LockTimeout):
            with b.lock("metric"):
                pass
    assert sample("acquired") == acquired + 1
    assert sample("timeout") == timeouts + 1
    assert REGISTRY.get_sample_value("lock_acquisition_duration_seconds_count", {"backend": a.backend}) >= 2


def test_a_try_lock_answers_at_once_whether_the_lock_is_free(two_managers):
    """``timeout=0`` (pull-through's "is anyone fetching this blob?") tries once and never waits."""
    a, b = two_managers
    with a.lock("fill:sha256:x", timeout=0):
        with pytest.raises(LockTimeout):
            with b.lock("fill:sha256:x", timeout=0):
                pass
    with b.lock("fill:sha256:x", timeout=0):
        pass


@pytest.mark.parametrize("kind", ["memory", "file"])
def test_a_try_lock_on_local_strategies(kind, tmp_path):
    from angos.storage.locks import FileLocks, MemoryLocks

    if kind == "memory":
        a = b = MemoryLocks()
    else:
        a, b = FileLocks(str(tmp_path)), FileLocks(str(tmp_path))  # two processes' views of one directory
    with a.lock("fill:sha256:y", timeout=0):
        with pytest.raises(LockTimeout):
            with b.lock("fill:sha256:y", timeout=0):
                pass
    with b.lock("fill:sha256:y", timeout=0):
        pass


def _names_sharing_a_prefix(prefix_len: int = 4) -> tuple[str, str]:
    """Two lock names whose hashes start alike: a per-bucket lock file would make them one lock."""
    import hashlib

    seen = {}
    i = 0
    while True:
        name = f"upload:{i}"
        head = hashlib.sha256(name.encode()).hexdigest()[:prefix_len]
        if head in seen:
            return seen[head], name
        seen[head] = name
        i += 1


def test_file_locks_nest_for_any_two_names(tmp_path):
    """An upload's lock is held while its blob's is taken: no two names may share a lock."""
    from angos.storage.locks import FileLocks

    first, second = _names_sharing_a_prefix()
    locks = FileLocks(str(tmp_path), timeout=2)
    with locks.lock(first):
        with locks.lock(second):
            pass
    other = FileLocks(str(tmp_path), timeout=2)  # and across processes' views of the directory
    with locks.lock(first):
        with other.lock(second, timeout=0):
            pass


def _count_under_file_lock(directory: str, counter: str, rounds: int) -> None:
    from angos.storage.locks import FileLocks

    locks = FileLocks(directory)
    for _ in range(rounds):
        with locks.lock("counter"):
            with open(counter) as f:
                n = int(f.read())
            with open(counter, "w") as f:
                f.write(str(n + 1))


def test_file_locks_exclude_processes_and_leave_no_files(tmp_path):
    """Lock files are removed on release; a waiter holding the removed file must not win."""
    import multiprocessing

    counter = tmp_path / "counter"
    counter.write_text("0")
    locks_dir = tmp_path / "locks"
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_count_under_file_lock, args=(str(locks_dir), str(counter), 300))
             for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert counter.read_text() == "1200"
    assert list(locks_dir.iterdir()) == []


def test_a_process_hammering_a_lock_lets_another_process_in(redis_server):
    """Greenlets of one process hand a lock to each other locally the moment it is released; a
    second process retrying every few ms must still get its turn within its retry budget."""
    busy = RedisLocks(RedisLock(url=redis_server, ttl=5, key_prefix="fair", max_retries=1000, retry_delay_ms=10))
    other = RedisLocks(RedisLock(url=redis_server, ttl=5, key_prefix="fair", max_retries=40, retry_delay_ms=10))
    stop = threading.Event()
    rounds = []

    def hammer():
        while not stop.is_set():
            with busy.lock("tag:ns:hot"):
                time.sleep(0.02)  # the behaviour under test: the lock is held, then handed on at once
            rounds.append(1)

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        wait_for(lambda: len(rounds) >= 8, what="the busy process to hand the lock on a few times")
        with other.lock("tag:ns:hot"):  # 40 retries of ~10 ms: about half a second of waiting
            pass
    finally:
        stop.set()
        for t in threads:
            t.join(10)


def test_redis_lock_outage_is_logged_once_and_its_end_once(redis_process, caplog):
    import logging

    caplog.set_level(logging.INFO, logger="angos.outage")
    locks = RedisLocks(RedisLock(url=redis_process.url, ttl=5, key_prefix="down", max_retries=1, retry_delay_ms=10))
    with locks.lock("before"):
        pass
    redis_process.stop()
    for i in range(5):  # five requests' worth of acquisitions while Redis is gone: each one a 503
        with pytest.raises(Unavailable):
            with locks.lock(f"during-{i}"):
                pass
    redis_process.start()
    with locks.lock("after"):
        pass
    lines = [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "angos.outage"]
    address = redis_process.url.split("//", 1)[1].split("/", 1)[0]
    assert [level for level, _ in lines] == ["WARNING", "INFO"], lines
    assert lines[0][1].startswith(f"Redis at {address} is unreachable (")
    assert lines[1][1].startswith(f"Redis at {address} is reachable again (down for ")
