"""angos.auth.throttle in-process: the failure budget per source and the order in which the
verification queue starts waiting checks. Real threads stand in for concurrent requests; each
"check" blocks on an Event so the order is decided by the queue alone, never by timing."""

from __future__ import annotations

import threading

import pytest

from angos.auth.throttle import Busy, FailureThrottle, VerificationQueue


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_a_source_spends_its_failure_budget_then_waits_for_it_to_refill():
    clock = Clock()
    t = FailureThrottle(burst=3, window=60, clock=clock)
    assert not t.suspect("10.0.0.1") and t.retry_after("10.0.0.1") == 0
    for _ in range(3):
        assert t.retry_after("10.0.0.1") == 0
        t.failed("10.0.0.1")
    assert t.suspect("10.0.0.1")
    assert t.retry_after("10.0.0.1") == pytest.approx(20)  # 3 per minute: one every 20 s
    assert t.retry_after("10.0.0.2") == 0  # other sources are not affected
    clock.now += 20
    assert t.retry_after("10.0.0.1") == 0 and t.suspect("10.0.0.1")
    clock.now += 40
    assert not t.suspect("10.0.0.1")


def test_the_throttle_forgets_the_oldest_sources_beyond_its_bound():
    t = FailureThrottle(burst=1, window=60, max_sources=2, clock=Clock())
    for ip in ("a", "b", "c"):
        t.failed(ip)
    assert not t.suspect("a") and t.suspect("b") and t.suspect("c")


class Checks:
    """Start checks on threads; each holds its slot until released."""

    def __init__(self, queue: VerificationQueue):
        self.queue = queue
        self.started: list[str] = []
        self.release: dict[str, threading.Event] = {}
        self.results: dict[str, object] = {}
        self.cond = threading.Condition()

    def _check(self, name):
        with self.cond:
            self.started.append(name)
            self.cond.notify_all()
        self.release[name].wait(60)
        return name

    def submit(self, name: str, suspect: bool = False, keys: tuple = ()):
        self.release[name] = threading.Event()

        def run():
            try:
                self.results[name] = self.queue.run(self._check, name, suspect=suspect, keys=keys)
            except Busy as exc:
                self.results[name] = exc
            with self.cond:
                self.cond.notify_all()

        t = threading.Thread(target=run, daemon=True)
        t.start()
        return t

    def wait_for(self, cond, what: str):
        # Generous: only liveness depends on it (the order is decided by the queue), and on a
        # loaded machine the queue's niced threads can be scheduled late. Polled, because a
        # check that starts to wait notifies nobody.
        deadline = 60.0
        with self.cond:
            while not cond() and deadline > 0:
                self.cond.wait(0.05)
                deadline -= 0.05
            assert cond(), what

    def settled(self, *names):
        self.wait_for(lambda: all(n in self.results or n in self.started for n in names), f"{names} settled")


def test_clean_checks_start_before_suspect_ones_and_keep_a_slot_of_their_own():
    q = VerificationQueue(parallel=2, max_waiting=10)
    c = Checks(q)
    c.submit("s1", suspect=True)
    c.wait_for(lambda: c.started == ["s1"], "s1 runs")
    c.submit("s2", suspect=True)  # a slot is free, but it is kept for clean checks
    c.wait_for(lambda: q.waiting == 1, "s2 waits")
    assert c.started == ["s1"]
    c.submit("c1")
    c.wait_for(lambda: c.started == ["s1", "c1"], "c1 takes the kept slot at once")
    c.submit("s3", suspect=True)
    c.submit("c2")
    c.wait_for(lambda: q.waiting == 3, "s2, s3, c2 wait")
    c.release["s1"].set()  # the freed slot goes to the clean check that came last
    c.wait_for(lambda: c.started[-1] == "c2", "c2 before s2 and s3")
    for name in ("c1", "c2"):
        c.release[name].set()
    c.wait_for(lambda: c.started[2:] == ["c2", "s2"], "s2 next, first come first served")
    for name in ("s2", "s3"):
        c.release[name].set()
    c.wait_for(lambda: len(c.results) == 5, "all done")
    assert c.started == ["s1", "c1", "c2", "s2", "s3"]


def test_a_full_queue_refuses_suspect_checks_and_lets_a_clean_one_take_a_suspect_place():
    q = VerificationQueue(parallel=1, max_waiting=2)
    c = Checks(q)
    c.submit("run")
    c.wait_for(lambda: c.started == ["run"], "runs")
    c.submit("s1", suspect=True)
    c.submit("s2", suspect=True)
    c.wait_for(lambda: q.waiting == 2, "queue full")
    c.submit("s3", suspect=True)
    c.wait_for(lambda: "s3" in c.results, "s3 refused at once")
    assert isinstance(c.results["s3"], Busy)
    c.submit("c1")
    c.wait_for(lambda: "s2" in c.results, "the newest suspect check gave way")
    assert isinstance(c.results["s2"], Busy)
    c.submit("c2")
    c.wait_for(lambda: "s1" in c.results, "and the next one")
    c.submit("c3")
    c.wait_for(lambda: "c3" in c.results, "every waiting check is clean: refused")
    assert isinstance(c.results["c3"], Busy)
    c.release["run"].set()
    for name in ("c1", "c2"):
        c.wait_for(lambda name=name: name in c.started, f"{name} runs")
        c.release[name].set()
    c.wait_for(lambda: c.results.get("c2") == "c2", "done")
    assert c.started == ["run", "c1", "c2"]


def test_a_failure_demotes_waiting_clean_checks_about_the_same_username():
    q = VerificationQueue(parallel=1, max_waiting=10)
    c = Checks(q)
    c.submit("run")
    c.wait_for(lambda: c.started == ["run"], "runs")
    c.submit("alice-guess", keys=("source:a", "user:alice"))
    c.wait_for(lambda: q.waiting == 1, "queued")
    c.submit("bob", keys=("source:b", "user:bob"))
    c.wait_for(lambda: q.waiting == 2, "queued")
    q.demote("user:alice")  # a check for alice just failed
    c.release["run"].set()
    c.wait_for(lambda: len(c.started) == 2, "next")
    assert c.started[1] == "bob"
    c.release["bob"].set()
    c.release["alice-guess"].set()
    c.wait_for(lambda: len(c.results) == 3, "done")


def test_a_source_over_its_failure_budget_gets_busy_but_cached_identities_and_other_sources_pass():
    import base64

    from angos.auth.basic import BadCredentials, BasicAuth
    from angos.config_auth import AuthConfig, Identity

    from .conftest import argon_hash

    def header(user, pw):
        return "Basic " + base64.b64encode(f"{user}:{pw}".encode()).decode()

    auth = BasicAuth({"alice": Identity("alice", argon_hash("alice-pw")), "bob": Identity("bob", argon_hash("bob-pw"))},
                     limits=AuthConfig(max_failures_per_source=2, failure_window=600))
    assert auth.verify(header("alice", "alice-pw"), "10.0.0.9") == ("alice", "alice")  # cached from now on
    for i in range(2):
        with pytest.raises(BadCredentials):
            auth.verify(header("alice", f"guess-{i}"), "10.0.0.9")
    with pytest.raises(Busy) as busy:  # no argon2 for this source now, even for a right password
        auth.verify(header("bob", "bob-pw"), "10.0.0.9")
    assert busy.value.retry_after >= 1
    assert auth.verify(header("alice", "alice-pw"), "10.0.0.9") == ("alice", "alice")  # cached: never throttled
    assert auth.verify(header("bob", "bob-pw"), "10.0.0.10") == ("bob", "bob")  # another source
