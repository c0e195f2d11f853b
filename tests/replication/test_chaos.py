"""A bounded chaos run: a 3-node full mesh, random pushes and deletes on random nodes, nodes
killed with SIGKILL and restarted. Every node must converge, without any reconcile, to the state
of the last successful client write of each tag (the client writes one at a time, so it knows
which write is last). Replay a failure with ANGOS_CHAOS_SEED=<seed printed by the run>."""

from __future__ import annotations

import os
import random
import time

import pytest
import requests

from ..conftest import wait_for
from .conftest import remote_digest
from .test_failures import OCI, _jobs, _small_manifest

TAGS = [f"t{i}" for i in range(8)]


@pytest.mark.slow
def test_mesh_converges_to_the_last_client_write_through_kills_and_restarts(mesh):
    seed = int(os.environ.get("ANGOS_CHAOS_SEED") or random.SystemRandom().randrange(1 << 32))
    print(f"chaos seed: {seed} (replay with ANGOS_CHAOS_SEED={seed})")
    rng = random.Random(seed)
    nodes = mesh(3)
    ns = "nginx/chaos"
    last: dict[str, str | None] = {}
    down = None
    revive_at = 0.0
    writes = kills = 0
    deadline = time.monotonic() + 60
    n = 0
    while time.monotonic() < deadline:
        n += 1
        if down is not None and time.monotonic() >= revive_at:
            down.start()
            down = None
        elif down is None and rng.random() < 0.02:
            down = rng.choice(nodes)
            down.kill()
            kills += 1
            revive_at = time.monotonic() + rng.uniform(1, 6)
        live = [s for s in nodes if s is not down]
        node = rng.choice(live)
        tag = rng.choice(TAGS)
        if rng.random() < 0.7:
            body, d = _small_manifest(node, ns, f"{seed}-{n}")
            r = requests.put(node.v2(f"{ns}/manifests/{tag}"), data=body, headers={"Content-Type": OCI})
            assert r.status_code == 201, r.text
            last[tag] = d
            writes += 1
        else:
            r = requests.delete(node.v2(f"{ns}/manifests/{tag}"))
            assert r.status_code in (202, 404), r.text
            if r.status_code == 202:
                last[tag] = None
                writes += 1
        time.sleep(rng.uniform(0, 0.1))  # random spacing of the writes is part of the chaos under test
    if down is not None:
        down.start()
    print(f"chaos: {writes} client writes, {kills} kills")

    def converged():
        return all(remote_digest(s, ns, tag) == want for tag, want in last.items() for s in nodes)

    assert wait_for(converged, timeout=120, interval=0.5), {
        tag: (want, [remote_digest(s, ns, tag) for s in nodes]) for tag, want in last.items()}
    assert wait_for(lambda: all(_jobs(s) == [] for s in nodes), timeout=30)
    assert all(_jobs(s, "/failed") == [] for s in nodes)
