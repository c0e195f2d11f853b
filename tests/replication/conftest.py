"""Fixtures for replication meshes: Angos instances that name each other as downstreams."""

from __future__ import annotations

import textwrap

import pytest
import requests

from ..conftest import free_port, wait_for

MESH_CONFIG = """\
[server]
bind_address = "127.0.0.1"
port = {port}

[global]
instance_name = "{name}"
max_concurrent_replication_jobs = 4

[blob_store.fs]
root_dir = "{data}"

[repository."nginx"]
[repository."nginx".access_policy]
default = "allow"
"""

DOWNSTREAM = """
[[repository."nginx".downstream]]
name = "{name}"
url = "{url}"
mode = "{mode}"
"""


@pytest.fixture
def mesh(angos_factory):
    """``mesh(n, edges)`` starts n instances; edges are (from, to) index pairs (full active-active by default).
    Instance i is named ``instance-<a, b, ...>``, which is also the downstream name the others give it."""

    def make(n: int = 2, edges=None, mode: str = "event+reconcile", extra: str = ""):
        ports = [free_port() for _ in range(n)]
        edges = edges if edges is not None else [(i, j) for i in range(n) for j in range(n) if i != j]
        servers = []
        for i in range(n):
            text = MESH_CONFIG.format(port=ports[i], data="@DATA@", name=f"instance-{chr(97 + i)}")
            for a, b in edges:
                if a == i:
                    text += DOWNSTREAM.format(name=f"instance-{chr(97 + b)}", url=f"http://127.0.0.1:{ports[b]}",
                                              mode=mode)
            text += textwrap.dedent(extra)
            server = angos_factory(config_text=text, start=False)
            server.port = ports[i]
            server.url = f"http://127.0.0.1:{ports[i]}"
            server.host = f"127.0.0.1:{ports[i]}"
            servers.append(server)
        for s in servers:
            s.start()
        return servers

    return make


def source_config(*downstreams: dict, extra: str = "", repository: str = "nginx") -> str:
    """Config text (with @PORT@/@DATA@ for angos_factory) of an instance whose allow-all
    ``repository`` replicates to ``downstreams`` (dicts of downstream options)."""
    text = (f'[server]\nbind_address = "127.0.0.1"\nport = @PORT@\n\n[blob_store.fs]\nroot_dir = "@DATA@"\n\n'
            f'[repository."{repository}"]\n[repository."{repository}".access_policy]\ndefault = "allow"\n')
    for ds in downstreams:
        text += f'\n[[repository."{repository}".downstream]]\n'
        for key, value in ds.items():
            text += f"{key} = {_toml(value)}\n"
    return text + textwrap.dedent(extra)


def _toml(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, int):
        return str(value)
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'



def enqueued(server) -> float:
    """Every replication job ``server`` has been asked to queue (new ones and coalesced ones)."""
    total = 0.0
    for line in requests.get(server.url + "/metrics", timeout=10).text.splitlines():
        if line.startswith("angos_job_queue_enqueued_total{") and 'queue="replication"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def _queued(server) -> list:
    r = requests.get(server.url + "/_ext/_jobs", params={"queue": "replication", "n": 1000}, timeout=10)
    assert r.status_code == 200, r.text
    return r.json()["jobs"]


def settled(servers, timeout: float = 60.0) -> list[float]:
    """Wait until replication has nothing left to do on any of ``servers``; return their enqueue counts.

    The positive signal that replaces "sleep, then check nothing happened": every queue is
    empty (no job pending or running) and no server's enqueue counter moved while the queues
    were read. A job that would still replicate (or bounce back) is either listed or, if it
    ran meanwhile, enqueued its follow-up while we looked, which moves a counter.
    """
    def once():
        before = [enqueued(s) for s in servers]
        busy = [(s.url, jobs) for s in servers if (jobs := _queued(s))]
        if busy:
            return None
        after = [enqueued(s) for s in servers]
        return after if after == before else None

    return wait_for(once, timeout=timeout, what="every replication queue to be empty with no new enqueue")


def remote_digest(server, ns: str, ref: str) -> str | None:
    r = requests.head(server.v2(f"{ns}/manifests/{ref}"))
    return r.headers.get("Docker-Content-Digest") if r.status_code == 200 else None


def push_counts(server) -> dict[tuple[str, str], float]:
    out = {}
    for line in requests.get(server.url + "/metrics").text.splitlines():
        if line.startswith("angos_replication_push_total{"):
            labels, value = line.rsplit(" ", 1)
            parts = dict(p.split("=", 1) for p in labels[labels.index("{") + 1:-1].split(","))
            out[(parts["downstream"].strip('"'), parts["outcome"].strip('"'))] = float(value)
    return out
