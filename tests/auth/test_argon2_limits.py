"""Argon2 in a real server process: what a verification costs and when it is paid.

README ("Identities"): a successful verification is remembered for 60 seconds
per worker process, wrong passwords are never remembered, concurrent requests
with the same credentials share one verification, and each worker runs at
most four at a time. These are checked on a real ``angos server`` (gunicorn,
gevent worker) by counting the verifications its process actually ran: the
server starts with :mod:`tests.auth.probe` on ``PYTHONPATH``, whose
``sitecustomize`` records the start and end of every
``argon2.PasswordHasher.verify`` call (time, pid) in a file.

The identities use a deliberately slow hash (``t=10``, 64 MiB, ~0.4 s on an
idle core) so that requests sent together are certainly in flight together.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import argon2
import pytest
import requests

from ..conftest import wait_for

PROBE = Path(__file__).resolve().parent / "probe"
PASSWORD = "s3cret"
SLOW = argon2.PasswordHasher(time_cost=10, memory_cost=65536, parallelism=4)


def verifications(log: Path) -> list[tuple[float, float, int]]:
    """Completed verifications as (start, end, pid), in start order."""
    starts, done = {}, []
    for line in log.read_text().splitlines() if log.exists() else []:
        event, at, pid, call = line.split()
        if event == "start":
            starts[call] = (float(at), int(pid))
        else:
            begun, pid_ = starts.pop(call)
            done.append((begun, float(at), pid_))
    return sorted(done)


def peak_overlap(runs) -> int:
    """The most verifications that were running at the same moment."""
    events = sorted([(s, 1) for s, _, _ in runs] + [(e, -1) for _, e, _ in runs], key=lambda t: (t[0], t[1]))
    peak = now = 0
    for _, step in events:
        now += step
        peak = max(peak, now)
    return peak


def together(n: int, request, url: str):
    """Run ``request(session, i)`` for i in range(n), all released at once, each on a keep-alive
    connection opened beforehand (so connecting does not spread them out)."""
    sessions = [requests.Session() for _ in range(n)]
    for s in sessions:
        assert s.get(url + "/healthz", timeout=30).status_code == 200
    barrier = threading.Barrier(n)
    results: list = [None] * n
    sent: list = [None] * n

    def run(i):
        barrier.wait()
        sent[i] = time.time()
        results[i] = request(sessions[i], i)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for s in sessions:
        s.close()
    return results, sent


@pytest.fixture
def slow_server(angos_factory, tmp_path):
    """``make(users)``: one gunicorn worker, identities ``users`` (all with PASSWORD), argon2 recorded."""

    def make(users, workers: int = 1):
        hashed = SLOW.hash(PASSWORD)  # one hash for every identity: each username is its own credential
        identities = "".join(f'[auth.identity.{u}]\nusername = "{u}"\npassword = "{hashed}"\n' for u in users)
        log = tmp_path / f"argon2-{len(users)}.log"
        env = {"ANGOS_TEST_ARGON2_LOG": str(log),
               "PYTHONPATH": os.pathsep.join(filter(None, [str(PROBE), os.environ.get("PYTHONPATH")]))}
        return angos_factory(identities, workers=workers, env=env), log

    return make


def test_concurrent_logins_with_the_same_credentials_run_argon2_once_and_are_then_remembered(slow_server):
    server, log = slow_server(["alice"])
    results, sent = together(8, lambda s, i: s.get(server.url + "/v2/", auth=("alice", PASSWORD), timeout=60),
                             server.url)
    assert [r.status_code for r in results] == [200] * 8
    (run,) = verifications(log)  # one verification for the eight requests
    assert max(sent) < run[1], "the requests were not in flight together; the test proves nothing"
    for _ in range(5):
        assert requests.get(server.url + "/v2/", auth=("alice", PASSWORD), timeout=30).status_code == 200
    assert len(verifications(log)) == 1  # remembered
    # Wrong passwords are never remembered: each one pays argon2 again.
    for _ in range(2):
        assert requests.get(server.url + "/v2/", auth=("alice", "wrong"), timeout=30).status_code == 401
    assert len(verifications(log)) == 3


def test_a_worker_runs_at_most_four_verifications_at_once(slow_server):
    users = [f"user{i}" for i in range(12)]
    server, log = slow_server(users)
    # Twelve different identities log in at once: nothing to share, nothing cached.
    results, sent = together(12, lambda s, i: s.get(server.url + "/v2/", auth=(users[i], PASSWORD), timeout=120),
                             server.url)
    assert [r.status_code for r in results] == [200] * 12
    runs = verifications(log)
    assert len(runs) == 12 and len({pid for _, _, pid in runs}) == 1
    # All twelve were waiting before the first four finished, so the bound, not timing, kept it at four.
    assert max(sent) < min(end for _, end, _ in runs)
    assert peak_overlap(runs) == 4


@pytest.mark.slow
def test_a_verification_is_remembered_for_sixty_seconds(slow_server):
    server, log = slow_server(["alice"])
    r = requests.get(server.url + "/v2/", auth=("alice", PASSWORD), timeout=30)
    answered = time.time()  # the server remembered the login before it answered
    assert r.status_code == 200
    (first,) = verifications(log)
    # The cache lifetime is what is under test: wait most of it (the entry was made after `first` ended) ...
    time.sleep(max(0.0, first[1] + 50 - time.time()))  # most of the 60 s lifetime under test
    assert requests.get(server.url + "/v2/", auth=("alice", PASSWORD), timeout=30).status_code == 200
    assert len(verifications(log)) == 1  # still remembered 50 s on
    # ... then past it (counted from the answer, which came after the entry was made).
    time.sleep(max(0.0, answered + 60.5 - time.time()))  # past the 60 s lifetime under test
    assert requests.get(server.url + "/v2/", auth=("alice", PASSWORD), timeout=30).status_code == 200
    assert len(verifications(log)) == 2  # forgotten: verified again


def test_a_configuration_reload_forgets_remembered_logins(slow_server):
    server, log = slow_server(["alice"])
    assert requests.get(server.url + "/v2/", auth=("alice", PASSWORD), timeout=30).status_code == 200
    old_workers = set(server.worker_pids())
    text = server.config_path.read_text()
    new_hash = SLOW.hash("changed")
    start = text.index('password = "') + len('password = "')
    server.config_path.write_text(text[:start] + new_hash + text[text.index('"', start):])
    wait_for(lambda: "configuration reloaded" in server.logs(), timeout=20, what="the reload")
    wait_for(lambda: server.worker_pids() and not set(server.worker_pids()) & old_workers, timeout=30,
             what="the old worker to be replaced")
    assert requests.get(server.url + "/v2/", auth=("alice", PASSWORD), timeout=30).status_code == 401
    assert requests.get(server.url + "/v2/", auth=("alice", "changed"), timeout=30).status_code == 200
    assert len(verifications(log)) == 3  # nothing answered from the old worker's memory
