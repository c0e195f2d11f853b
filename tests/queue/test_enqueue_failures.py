"""README ("Job queue"): enqueueing never fails a registry request; errors are logged and
counted in ``angos_job_queue_enqueue_failures_total``.

A real server replicates a repository to a peer, so every manifest push queues a
replication job. Pushes are made with the queue backend up (to learn how many jobs a
push queues), then with it taken away, then with it back:

- Redis (``[global.job_queue] backend = "redis"``): the redis-server is stopped;
- SQLite (the default in-process drain): the queue's database is made unwritable with
  ``chattr +i`` (file permissions do not stop root, which the tests run as).

While the backend is away every push still answers 201, the failure counter grows by
exactly the jobs those pushes would have queued, and nothing is counted as enqueued.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import requests

from tests.replication.conftest import enqueued, source_config
from tests.replication.test_failures import OCI, _small_manifest

from ..conftest import chattr, wait_for


def failures(server) -> float:
    text = requests.get(server.url + "/metrics", timeout=10).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("angos_job_queue_enqueue_failures_total{") and 'queue="replication"' in line)


def push(server, tag: str) -> None:
    body, _ = _small_manifest(server, "nginx/app", tag)
    r = requests.put(server.v2(f"nginx/app/manifests/{tag}"), data=body, headers={"Content-Type": OCI}, timeout=60)
    assert r.status_code == 201, r.text


def pushes_during(server, take_away, give_back, n: int = 4) -> None:
    """The scenario both backends share (see the module docstring)."""
    before_q, before_f = enqueued(server), failures(server)
    for i in range(n):
        push(server, f"up{i}")
    per_batch = enqueued(server) - before_q
    assert per_batch >= n and failures(server) == before_f  # every push queues at least one job
    take_away()
    try:
        for i in range(n):
            push(server, f"down{i}")  # 201 each, the queue notwithstanding
        assert failures(server) - before_f == per_batch  # every job that could not be queued, counted
        assert enqueued(server) - before_q == per_batch  # and none counted as queued
        assert "enqueue to replication failed" in server.logs()
    finally:
        give_back()
    push(server, "again")
    wait_for(lambda: enqueued(server) > before_q + per_batch, timeout=30, what="enqueueing to work again")
    assert failures(server) - before_f == per_batch


def test_pushes_succeed_and_are_counted_while_redis_is_down(angos_factory, redis_process):
    peer = angos_factory()
    server = angos_factory(config_text=source_config(
        {"name": "peer", "url": peer.url},
        extra=f'\n[global.job_queue]\nbackend = "redis"\nurl = "{redis_process.url}"\n'))
    pushes_during(server, redis_process.stop, redis_process.start)


def test_pushes_succeed_and_are_counted_while_the_sqlite_queue_is_unwritable(angos_factory):
    peer = angos_factory()
    server = angos_factory(config_text=source_config({"name": "peer", "url": peer.url}))
    db = server.workdir / "data" / "_jobs" / "pending" / "replication" / "queue.db"
    frozen: list[Path] = []

    def freeze():
        wait_for(db.exists, timeout=30, what="the queue database")
        # The database and its WAL: no write can land anywhere, whatever connection tries.
        frozen[:] = [p for p in (db, db.with_name("queue.db-wal"), db.with_name("queue.db-shm")) if p.exists()]
        chattr("+i", *frozen, db.parent)

    def thaw():
        chattr("-i", *frozen, db.parent)

    try:
        pushes_during(server, freeze, thaw)
    finally:
        if frozen:  # whatever failed above: the test's directory must stay removable
            subprocess.run(["chattr", "-i", *map(str, frozen), str(db.parent)], capture_output=True)
    # The jobs queued after the thaw reach the peer: the drain came through it too.
    wait_for(lambda: requests.head(peer.v2("nginx/app/manifests/again"), timeout=10).status_code == 200,
             timeout=60, what="the push after the thaw to replicate")
