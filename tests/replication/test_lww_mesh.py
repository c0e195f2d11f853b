"""Concurrent writers on an active-active pair converge by last-writer-wins."""

from __future__ import annotations

import threading

import requests

from ..conftest import wait_for
from .conftest import remote_digest
from .test_active_active import _quiet
from .test_failures import OCI, _small_manifest


def test_concurrent_writes_to_one_tag_converge_on_both_instances(mesh):
    a, b = mesh(2)
    rounds = 8
    for i in range(rounds):
        ns = "nginx/race"
        body_a, da = _small_manifest(a, ns, f"a{i}")
        body_b, db = _small_manifest(b, ns, f"b{i}")
        first, second = ((a, body_a), (b, body_b)) if i % 2 else ((b, body_b), (a, body_a))
        barrier = threading.Barrier(2)
        codes = []

        def put(server, body):
            barrier.wait()
            codes.append(requests.put(server.v2(f"{ns}/manifests/t{i}"), data=body,
                                      headers={"Content-Type": OCI}).status_code)

        threads = [threading.Thread(target=put, args=pair) for pair in (first, second)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert codes == [201, 201]

        def agreed():
            x, y = remote_digest(a, ns, f"t{i}"), remote_digest(b, ns, f"t{i}")
            return x if x == y and x in (da, db) else None

        assert wait_for(agreed, timeout=10), (remote_digest(a, ns, f"t{i}"), remote_digest(b, ns, f"t{i}"))
    _quiet([a, b])
    for i in range(rounds):
        assert remote_digest(a, "nginx/race", f"t{i}") == remote_digest(b, "nginx/race", f"t{i}")
