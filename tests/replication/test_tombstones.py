"""Last-writer-wins with deletes: whatever order the jobs run in, every node ends in the state
written by the latest author time (a digest, or absent).

The consumers are held: each instance has ``[global.job_queue]`` and no worker, so its jobs
wait in its queue until the test starts a worker for that instance, drains it and stops it.
The tests release the queues in every order that matters, then let them settle.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import requests

from angos.config import default_instance_name

from ..conftest import ROOT, wait_for
from .conftest import remote_digest
from .test_failures import OCI, _jobs, _small_manifest

HELD = """
[global.job_queue]
max_attempts = 5
retry_backoff_min_ms = 50
retry_backoff_max_ms = 200
"""


def _drain(server, timeout: float = 60) -> None:
    """Run one worker for ``server`` until its replication queue is empty, then stop it."""
    proc = subprocess.Popen([sys.executable, "-m", "angos.cli", "-c", str(server.config_path), "worker",
                             "--queue", "replication"], cwd=server.workdir,
                            stdout=open(server.workdir / "worker.log", "ab"), stderr=subprocess.STDOUT,
                            start_new_session=True, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    try:
        wait_for(lambda: not _jobs(server), timeout=timeout, what=f"the queue of {server.url} to drain")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


def settle(servers, first=()) -> None:
    """Drain ``first`` in that order, then every queue until all are empty after a full round."""
    for s in first:
        _drain(s)
    for _ in range(10):
        if not any(_jobs(s) for s in servers):
            return
        for s in servers:
            _drain(s)
    raise AssertionError("the mesh did not settle")


def _push(server, ns: str, tag: str, seed: str) -> str:
    body, d = _small_manifest(server, ns, seed)
    r = requests.put(server.v2(f"{ns}/manifests/{tag}"), data=body, headers={"Content-Type": OCI})
    assert r.status_code == 201, r.text
    return d


def _delete(server, ns: str, tag: str) -> None:
    assert requests.delete(server.v2(f"{ns}/manifests/{tag}")).status_code == 202


def _states(servers, ns: str, tag: str) -> list:
    return [remote_digest(s, ns, tag) for s in servers]


# Node 0 and node 1 hold the two conflicting jobs; release either first.
ORDERS = [(0, 1), (1, 0)]
TOPOLOGIES = {
    "pair": (2, None),
    "ring": (3, [(0, 1), (1, 2), (2, 0)]),
    "mesh": (3, None),
}


@pytest.mark.parametrize("topology", sorted(TOPOLOGIES))
def test_push_then_later_delete_ends_deleted_in_every_job_order(mesh, topology):
    n, edges = TOPOLOGIES[topology]
    nodes = mesh(n, edges, extra=HELD)
    ns = "nginx/race"
    for order in ORDERS:
        tag = "t" + "".join(map(str, order))
        _push(nodes[0], ns, tag, f"base-{tag}")
        settle(nodes)
        assert len(set(_states(nodes, ns, tag))) == 1 and _states(nodes, ns, tag)[0] is not None
        _push(nodes[1], ns, tag, f"new-{tag}")    # older write, on one node
        time.sleep(0.01)  # the behaviour under test: the next write's author time is strictly later
        _delete(nodes[0], ns, tag)                 # later write, on another
        settle(nodes, [nodes[i] for i in order])
        assert _states(nodes, ns, tag) == [None] * n, (order, _states(nodes, ns, tag))


@pytest.mark.parametrize("topology", sorted(TOPOLOGIES))
def test_delete_then_later_push_ends_at_the_push_in_every_job_order(mesh, topology):
    n, edges = TOPOLOGIES[topology]
    nodes = mesh(n, edges, extra=HELD)
    ns = "nginx/race"
    for order in ORDERS:
        tag = "t" + "".join(map(str, order))
        _push(nodes[0], ns, tag, f"base-{tag}")
        settle(nodes)
        _delete(nodes[0], ns, tag)                 # older write
        time.sleep(0.01)  # the behaviour under test: the next write's author time is strictly later
        d = _push(nodes[1], ns, tag, f"new-{tag}")  # later write, on another node
        settle(nodes, [nodes[i] for i in order])
        assert _states(nodes, ns, tag) == [d] * n, (order, _states(nodes, ns, tag))


def test_a_replicated_push_older_than_a_local_delete_is_superseded(angos_factory):
    node = angos_factory()
    ns = "nginx/app"
    d = _push(node, ns, "v1", "one")
    _delete(node, ns, "v1")
    body, d2 = _small_manifest(node, ns, "two")
    old = "2000-01-01T00:00:00.000000Z"
    r = requests.put(node.v2(f"{ns}/manifests/v1"), data=body,
                     headers={"Content-Type": OCI, "X-Angos-Source-Timestamp": old})
    assert r.status_code == 409 and r.json()["errors"][0]["code"] == "REPLICATION_SUPERSEDED"
    assert remote_digest(node, ns, "v1") is None
    # The tag states listing shows the tombstone with its author time.
    states = requests.get(node.url + f"/_ext/{ns}/_tags").json()["tags"]
    assert [s["name"] for s in states] == ["v1"] and "deleted_at" in states[0] and "digest" not in states[0]
    # The refusal said a delete won, when, and where it was made (no instance_name: the host name).
    assert r.json()["errors"][0]["detail"] == {"tag": "v1", "digest": None, "author_time": states[0]["deleted_at"],
                                               "origin": default_instance_name()}
    # A client push after the delete simply creates the tag again (it is newer).
    assert _push(node, ns, "v1", "three") != d
    states = requests.get(node.url + f"/_ext/{ns}/_tags").json()["tags"]
    assert states[0]["digest"] == remote_digest(node, ns, "v1") and states[0]["created_at"] > old


def test_a_replicated_delete_of_an_absent_tag_is_remembered(angos_factory):
    """A delete that arrives first must still beat an older push arriving from a third node."""
    node = angos_factory()
    ns = "nginx/app"
    _push(node, ns, "other", "x")
    r = requests.delete(node.v2(f"{ns}/manifests/v9"), headers={"X-Angos-Source-Timestamp": "2020-01-01T00:00:00Z"})
    assert r.status_code == 404
    body, _ = _small_manifest(node, ns, "stale")
    r = requests.put(node.v2(f"{ns}/manifests/v9"), data=body,
                     headers={"Content-Type": OCI, "X-Angos-Source-Timestamp": "2019-12-31T00:00:00Z"})
    assert r.status_code == 409, r.text
    # Equal author times: the delete wins.
    r = requests.put(node.v2(f"{ns}/manifests/v9"), data=body,
                     headers={"Content-Type": OCI, "X-Angos-Source-Timestamp": "2020-01-01T00:00:00Z"})
    assert r.status_code == 409
    assert remote_digest(node, ns, "v9") is None


def test_a_delete_made_while_the_peer_is_down_reaches_it_when_it_returns(mesh):
    a, b = mesh(2)
    ns = "nginx/app"
    _push(a, ns, "v1", "one")
    assert wait_for(lambda: remote_digest(b, ns, "v1") is not None, timeout=20)
    b.stop()
    _delete(a, ns, "v1")
    b.start()
    assert wait_for(lambda: remote_digest(b, ns, "v1") is None, timeout=30)
    assert wait_for(lambda: _jobs(a) == [] and _jobs(b) == [], timeout=20)
    assert _jobs(a, "/failed") == [] and remote_digest(a, ns, "v1") is None


@pytest.mark.parametrize("first", ["peer", "origin"])
def test_reconcile_on_either_side_never_brings_a_delete_back(mesh, first):
    from .test_reconcile import scrub

    a, b = mesh(2, extra=HELD)
    ns = "nginx/app"
    _push(a, ns, "v1", "one")
    settle([a, b])
    assert remote_digest(b, ns, "v1") is not None
    _delete(a, ns, "v1")          # its job waits in A's held queue, as if B were unreachable
    order = [b, a] if first == "peer" else [a, b]
    for node in order:
        res = scrub(node, "replicate")
        assert res.returncode == 0, res.stdout + res.stderr
        assert remote_digest(a, ns, "v1") is None   # B's reconcile does not push v1 back
    assert remote_digest(b, ns, "v1") is None       # A's reconcile sent its tombstone as a delete
    settle([a, b])
    assert [remote_digest(s, ns, "v1") for s in (a, b)] == [None, None]
    assert _jobs(a, "/failed") == [] and _jobs(b, "/failed") == []
