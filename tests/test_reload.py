"""Configuration hot reload on a running server (no restart), also while clients push and pull."""

from __future__ import annotations

import hashlib
import signal
import threading
import time

import requests

from .conftest import wait_for
from .replication.conftest import remote_digest
from .replication.test_failures import OCI, _small_manifest


def test_added_downstream_replicates_without_restart(angos_factory):
    peer = angos_factory()
    server = angos_factory()
    pid = server.pid
    old_workers = set(server.worker_pids())
    body, d = _small_manifest(server, "team/app", "before")
    assert requests.put(server.v2("team/app/manifests/v1"), data=body, headers={"Content-Type": OCI}).status_code == 201
    server.config_path.write_text(server.config_path.read_text() + f"""
[repository."team"]
[repository."team".access_policy]
default = "allow"
[[repository."team".downstream]]
name = "peer"
url = "{peer.url}"
""")
    assert wait_for(lambda: "configuration reloaded" in server.logs(), timeout=15)
    # The reload replaces the workers (the old ones finish what they serve).
    assert wait_for(lambda: not set(server.worker_pids()) & old_workers and len(server.worker_pids()) == 2,
                    timeout=30)
    body2, d2 = _small_manifest(server, "team/app", "after")
    r = requests.put(server.v2("team/app/manifests/v2"), data=body2, headers={"Content-Type": OCI})
    assert r.status_code == 201
    assert wait_for(lambda: remote_digest(peer, "team/app", "v2") == d2, timeout=15)
    assert remote_digest(peer, "team/app", "v1") is None  # pushed before the downstream existed
    assert server.pid == pid and server.proc.poll() is None  # same master: no restart


def test_invalid_edit_is_rejected_and_the_old_config_keeps_serving(angos_factory):
    server = angos_factory()
    good = server.config_path.read_text()
    server.config_path.write_text(good + "\n[global]\nmax_manifest_sise = 1\n")
    assert wait_for(lambda: "configuration change rejected" in server.logs(), timeout=15)
    assert "max_manifest_sise" in server.logs()
    body, d = _small_manifest(server, "still/works", "x")
    r = requests.put(server.v2("still/works/manifests/v1"), data=body, headers={"Content-Type": OCI})
    assert r.status_code == 201
    # A policy that would not compile is refused as well, before it reaches a worker.
    server.config_path.write_text(good.replace('default = "allow"', 'default = "allow"\nrules = ["identity.id ==="]'))
    assert wait_for(lambda: server.logs().count("configuration change rejected") >= 2, timeout=15)
    assert requests.get(server.v2("still/works/manifests/v1")).status_code == 200


def test_restart_only_change_is_logged_and_kept_until_restart(angos_factory):
    server = angos_factory()
    text = server.config_path.read_text()
    server.config_path.write_text(text.replace(f"port = {server.port}", f"port = {server.port + 1}")
                                  + "\n[global]\nmax_manifest_size = \"1KiB\"\n")
    assert wait_for(lambda: "only after a restart: server.port" in server.logs(), timeout=15)
    assert wait_for(lambda: "configuration reloaded" in server.logs(), timeout=15)
    # Still on the old port; the live part (the manifest size limit) applied.
    big = b'{"schemaVersion":2,"mediaType":"' + OCI.encode() + b'","config":' + b" " * 2048 + b"}"

    def limited():
        r = requests.put(server.v2("limits/app/manifests/v1"), data=big, headers={"Content-Type": OCI})
        return r.status_code == 413
    assert wait_for(limited, timeout=15)


class Clients:
    """Pushers and pullers hammering ``server`` until stopped, each request on a connection of its
    own (``Connection: close``): an idle keep-alive connection may be closed by a server at any time
    (HTTP/1.1 clients retry on such a connection), so only a request the server accepted counts,
    and every one of them must succeed."""

    def __init__(self, server, pushers: int = 2, pullers: int = 2):
        self.server = server
        self.stop = threading.Event()
        self.failures: list[str] = []
        self.done: list[tuple[float, str]] = []  # (start time, what) of every request that succeeded
        body, self.digest = _small_manifest(server, "load/seed", "seed")
        self._request("put", "load/seed/manifests/v1", 201, data=body, headers={"Content-Type": OCI})
        self.threads = [threading.Thread(target=self._push, args=(i,)) for i in range(pushers)]
        self.threads += [threading.Thread(target=self._pull) for _ in range(pullers)]
        for t in self.threads:
            t.start()

    def _request(self, method: str, path: str, expected: int, **kw) -> requests.Response | None:
        started = time.time()
        headers = {"Connection": "close", **kw.pop("headers", {})}
        try:
            r = requests.request(method, self.server.v2(path), headers=headers, timeout=60, **kw)
        except requests.RequestException as exc:
            self.failures.append(f"{method} {path}: {exc!r}")
            return None
        if r.status_code != expected:
            self.failures.append(f"{method} {path}: {r.status_code} {r.text[:200]}")
            return None
        self.done.append((started, method))
        return r

    def _push(self, i: int) -> None:
        n = 0
        while not self.stop.is_set():
            n += 1
            cfg = f'{{"pusher": {i}, "n": {n}}}'.encode()
            d = "sha256:" + hashlib.sha256(cfg).hexdigest()
            if self._request("post", f"load/p{i}/blobs/uploads/?digest={d}", 201, data=cfg) is None:
                continue
            body = (f'{{"schemaVersion":2,"mediaType":"{OCI}","config":{{"mediaType":'
                    f'"application/vnd.oci.image.config.v1+json","digest":"{d}","size":{len(cfg)}}},'
                    f'"layers":[]}}').encode()
            self._request("put", f"load/p{i}/manifests/t{n % 5}", 201, data=body, headers={"Content-Type": OCI})

    def _pull(self) -> None:
        while not self.stop.is_set():
            r = self._request("get", "load/seed/manifests/v1", 200, headers={"Accept": OCI})
            if r is not None and "sha256:" + hashlib.sha256(r.content).hexdigest() != self.digest:
                self.failures.append("a pull returned other bytes")

    def finish(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(120)


def test_reloads_while_clients_push_and_pull_drop_no_request(angos_factory):
    server = angos_factory(workers=2)
    clients = Clients(server)
    windows = []
    try:
        text = server.config_path.read_text()
        for n in range(4):
            old = set(server.worker_pids())
            began = time.time()
            if n == 3:
                server.proc.send_signal(signal.SIGHUP)  # the other way to ask for a reload
            else:
                # A real change each time (the default is 5MiB: an equal value would be no change at all).
                server.config_path.write_text(text + f'\n[global]\nmax_manifest_size = "{6 + n}MiB"\n')
                wait_for(lambda n=n: server.logs().count("angos.reload: configuration reloaded") >= n + 1,
                         timeout=30, what=f"reload {n + 1}")
            wait_for(lambda old=old: len(server.worker_pids()) == 2 and not set(server.worker_pids()) & old,
                     timeout=60, what="the old workers to be replaced")
            windows.append((began, time.time()))
    finally:
        clients.finish()
    assert clients.failures == []
    # Requests really were under way while every set of workers was being replaced.
    for began, ended in windows:
        assert sum(began <= t <= ended for t, _ in clients.done) >= 5, (began, ended)
    assert {m for _, m in clients.done} == {"get", "post", "put"}
