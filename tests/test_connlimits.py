"""ConnectionTable decisions (angos.connlimits), in-process: which connection makes room, when a new
one is refused, and that the counts never drift. tests/test_slow_clients.py covers the same
rules on a real server."""

from __future__ import annotations

import ipaddress

from angos.connlimits import ConnectionTable


def test_at_the_cap_the_addresss_longest_waiting_connection_makes_room():
    t = ConnectionTable(pool_size=100, per_ip=2)
    assert t.opened("a1", "10.0.0.1") == (True, [])
    assert t.opened("a2", "10.0.0.1") == (True, [])
    assert t.opened("b1", "10.0.0.2") == (True, [])
    assert t.opened("a3", "10.0.0.1") == (True, ["a1"])
    assert t.count("10.0.0.1") == 2 and t.count() == 3


def test_a_connection_that_started_waiting_again_is_the_newest():
    t = ConnectionTable(pool_size=100, per_ip=2)
    t.opened("a1", "10.0.0.1")
    t.opened("a2", "10.0.0.1")
    t.serving("a1")
    t.waiting("a1")  # served a request, now idle on keep-alive: younger than a2
    assert t.opened("a3", "10.0.0.1") == (True, ["a2"])


def test_when_every_connection_of_the_address_is_serving_the_new_one_is_refused():
    t = ConnectionTable(pool_size=100, per_ip=2)
    for c in ("a1", "a2"):
        t.opened(c, "10.0.0.1")
        t.serving(c)
    assert t.opened("a3", "10.0.0.1") == (False, [])
    assert t.count("10.0.0.1") == 2 and t.count() == 2
    t.closed("a1")
    assert t.opened("a3", "10.0.0.1") == (True, [])


def test_a_waiting_connection_whose_request_arrived_is_not_evicted():
    t = ConnectionTable(pool_size=100, per_ip=2)
    t.opened("a1", "10.0.0.1")
    t.opened("a2", "10.0.0.1")
    assert t.opened("a3", "10.0.0.1", has_request=lambda c: c == "a1") == (True, ["a2"])
    assert t.opened("a4", "10.0.0.1", has_request=lambda c: True) == (False, [])


def test_repeated_arrivals_never_push_the_count_past_the_cap():
    t = ConnectionTable(pool_size=1000, per_ip=3)
    evicted = []
    for i in range(50):  # the evicted sockets close later; they must not be picked twice
        ok, out = t.opened(f"c{i}", "10.0.0.1")
        assert ok
        evicted += out
        assert t.count("10.0.0.1") <= 3
    assert len(evicted) == len(set(evicted)) == 47
    for c in evicted:
        t.closed(c)  # the worker's handler exits later: closing twice changes nothing
    assert t.count("10.0.0.1") == 3 and t.count() == 3


def test_a_full_pool_closes_the_longest_waiting_connection_of_any_address():
    t = ConnectionTable(pool_size=3, per_ip=10)
    t.opened("a1", "10.0.0.1")
    t.opened("b1", "10.0.0.2")
    t.serving("a1")
    assert t.opened("c1", "10.0.0.3") == (True, ["b1"])  # a1 is busy; c1 itself is never its own victim
    assert t.count() == 2


def test_trusted_proxies_have_no_per_address_cap_but_count_toward_the_pool():
    t = ConnectionTable(pool_size=5, per_ip=1, exempt=[ipaddress.ip_network("127.0.0.0/8")])
    for i in range(4):
        assert t.opened(f"p{i}", "127.0.0.1") == (True, [])
    assert t.count("127.0.0.1") == 0 and t.count() == 4
    assert t.opened("p4", "127.0.0.1") == (True, ["p0"])  # the pool is full now
    assert t.opened("x1", "10.0.0.1") == (True, ["p1"])
    assert t.opened("x2", "10.0.0.1") == (True, ["x1"])  # the cap made room: the pool is not full
