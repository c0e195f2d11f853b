"""Event webhooks against real servers and a real receiver (tests/events/receiver.py), which checks
every signature with its own HMAC: each kind delivered once with its payload, ``required`` refusing
before anything is stored (a refused pull serving nothing), which answers refuse and which mean
"cannot be reached", retries with growing pauses, ``optional`` failing harmlessly, ``async``
deliveries surviving a restart with the receiver down, never slowing a push and, on a Redis queue,
waiting for ``angos worker --queue webhooks``, and the internal actor of replication receipts,
retention deletes and pull-through fills."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
from pathlib import Path

import argon2
import pytest
import requests

from ..api.helpers import (OCI_CONFIG, OCI_LAYER, OCI_MANIFEST, descriptor, digest_of, image_manifest, random_bytes,
                           uniq)
from ..conftest import ANGOS, ROOT, AngosServer, angos_config, free_port, tree_snapshot, wait_for
from ..maintenance.conftest import scrub
from .receiver import Receiver

ALL = ["manifest.push", "manifest.pull", "manifest.delete", "blob.push", "blob.pull", "tag.create", "tag.delete"]
TOKEN = "tok-everything-0123"
ALICE = ("alice", "wonderland")
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


def _toml_list(items) -> str:
    return json.dumps(list(items))


@pytest.fixture(scope="module")
def hooked(tmp_path_factory):
    """One server, three receivers: ``everything`` (optional, every kind, signed) for every namespace,
    replaced by ``audit`` (required) in ``guarded/`` and by ``notify`` (optional) in ``loose/``."""
    receivers = {"everything": Receiver(TOKEN).start(), "audit": Receiver().start(),
                 "notify": Receiver(status=500).start()}
    hasher = argon2.PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    extra = f"""
        [global]
        event_webhooks = ["everything"]

        [auth.identity.alice]
        username = "alice"
        password = "{hasher.hash(ALICE[1])}"

        [event_webhook.everything]
        url = "{receivers['everything'].url}"
        policy = "optional"
        events = {_toml_list(ALL)}
        token = "{TOKEN}"

        [event_webhook.audit]
        url = "{receivers['audit'].url}"
        policy = "required"
        events = ["manifest.push", "manifest.delete", "blob.push"]
        timeout = "5s"

        [event_webhook.notify]
        url = "{receivers['notify'].url}"
        policy = "optional"
        events = ["manifest.push"]
        timeout = "5s"

        [repository."hooks"]

        [repository."guarded"]
        event_webhooks = ["audit"]

        [repository."loose"]
        event_webhooks = ["notify"]
        """
    workdir = tmp_path_factory.mktemp("angos-hooked")
    port = free_port()
    server = AngosServer(workdir, angos_config(workdir / "data", port, 2, extra), port).start()
    yield server, receivers
    server.stop(timeout=10)
    for r in receivers.values():
        r.stop()


def _blob(server, ns: str, data: bytes, auth=None) -> requests.Response:
    return requests.post(server.v2(f"{ns}/blobs/uploads/?digest={digest_of(data)}"), data=data, auth=auth)


def _image(server, ns: str, auth=None) -> tuple[bytes, str, str]:
    """Push a config and a layer; return (manifest body, manifest digest, layer digest)."""
    config, layer = json.dumps({"nonce": uniq()}).encode(), random_bytes(200)
    for data in (config, layer):
        assert _blob(server, ns, data, auth).status_code == 201
    body = image_manifest(descriptor(OCI_CONFIG, config), [descriptor(OCI_LAYER, layer)])
    return body, digest_of(body), digest_of(layer)


def _put(server, ns: str, ref: str, body: bytes, auth=None) -> requests.Response:
    return requests.put(server.v2(f"{ns}/manifests/{ref}"), data=body, headers={"Content-Type": OCI_MANIFEST},
                        auth=auth)


def _readme_verifier():
    """The signature check the README's "Event webhooks" section shows, run as written."""
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("\n## Event webhooks"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    scope: dict = {}
    exec(compile(code, "README.md (Event webhooks)", "exec"), scope)  # noqa: S102 - our own documentation
    return scope["verify"]


def test_each_event_kind_is_delivered_once_with_its_payload_and_a_valid_signature(hooked):
    server, receivers = hooked
    everything = receivers["everything"]
    ns, other = f"hooks/{uniq('app')}", f"hooks/{uniq('mnt')}"
    body, digest, layer = _image(server, ns, ALICE)
    r = requests.post(server.v2(f"{other}/blobs/uploads/?mount={layer}&from={ns}"), auth=ALICE)
    assert r.status_code == 201, r.text
    assert _put(server, ns, "v1", body, ALICE).status_code == 201
    assert requests.get(server.v2(f"{ns}/manifests/v1"), headers={"Accept": OCI_MANIFEST}, auth=ALICE).ok
    assert requests.head(server.v2(f"{ns}/manifests/v1"), headers={"Accept": OCI_MANIFEST}, auth=ALICE).ok
    assert requests.get(server.v2(f"{ns}/blobs/{layer}")).content  # anonymous
    assert requests.head(server.v2(f"{ns}/blobs/{layer}")).ok
    assert requests.delete(server.v2(f"{ns}/manifests/v1"), auth=ALICE).status_code == 202
    assert requests.delete(server.v2(f"{ns}/manifests/{digest}"), auth=ALICE).status_code == 202

    # Optional deliveries happen before the response: everything is there, in order, now.
    got = everything.of(namespace=ns)
    assert [d.kind for d in got] == ["blob.push", "blob.push", "manifest.push", "tag.create", "manifest.pull",
                                     "blob.pull", "manifest.delete", "tag.delete", "manifest.delete"]
    assert [d.kind for d in everything.of(namespace=other)] == ["blob.push"]
    alice = {"kind": "user", "id": "alice", "username": "alice", "client_ip": "127.0.0.1"}
    expected = [
        {"kind": "blob.push", "digest": got[0].doc["digest"], "actor": alice},
        {"kind": "blob.push", "digest": layer, "actor": alice},
        {"kind": "manifest.push", "digest": digest, "reference": "v1", "tag": "v1", "actor": alice},
        {"kind": "tag.create", "digest": digest, "reference": "v1", "tag": "v1", "actor": alice},
        {"kind": "manifest.pull", "digest": digest, "reference": "v1", "tag": "v1", "actor": alice},
        {"kind": "blob.pull", "digest": layer, "actor": {"kind": "anonymous", "client_ip": "127.0.0.1"}},
        {"kind": "manifest.delete", "digest": digest, "reference": "v1", "tag": "v1", "actor": alice},
        {"kind": "tag.delete", "digest": digest, "reference": "v1", "tag": "v1", "actor": alice},
        {"kind": "manifest.delete", "digest": digest, "reference": digest, "actor": alice},
    ]
    verify = _readme_verifier()
    for delivery, want in zip(got, expected):
        doc = delivery.doc
        assert {k: v for k, v in doc.items() if k not in ("id", "timestamp")} == {
            "namespace": ns, "repository": "hooks", **want}, doc
        assert TIMESTAMP.fullmatch(doc["timestamp"]), doc
        assert delivery.signature_ok, delivery.headers
        assert verify(TOKEN, delivery.body, delivery.headers["X-Registry-Signature-256"])
        assert not verify("another-token", delivery.body, delivery.headers["X-Registry-Signature-256"])
        assert delivery.headers["Authorization"] == f"Bearer {TOKEN}"
        assert delivery.headers["X-Registry-Event"] == doc["kind"]
        assert delivery.headers["Content-Type"] == "application/json"
    assert len({d.doc["id"] for d in got}) == len(got)
    assert got[0].doc["digest"] != layer  # the config blob came first
    assert not receivers["audit"].of(namespace=ns) and not receivers["notify"].of(namespace=ns)


def test_a_failing_required_webhook_refuses_the_operation_before_anything_is_stored(hooked):
    server, receivers = hooked
    audit = receivers["audit"]
    ns = f"guarded/{uniq('app')}"
    data_dir = Path(server.workdir) / "data"

    audit.status = 409
    lone = random_bytes(100)
    r = _blob(server, ns, lone)
    assert r.status_code == 403 and r.json()["errors"][0]["code"] == "DENIED", r.text
    assert "audit" in r.json()["errors"][0]["message"]
    assert requests.head(server.v2(f"{ns}/blobs/{digest_of(lone)}")).status_code == 404

    audit.status = 204
    body, digest, _ = _image(server, ns)
    audit.status = 409
    before = tree_snapshot(data_dir)
    r = _put(server, ns, "v1", body)
    assert r.status_code == 403 and r.json()["errors"][0]["code"] == "DENIED", r.text
    audit.stop()  # nothing listens: unreachable
    r = _put(server, ns, "v1", body)
    assert r.status_code == 503 and r.json()["errors"][0]["code"] == "UNAVAILABLE", r.text
    after = tree_snapshot(data_dir)
    assert before == after, "a refused push changed storage"
    for ref in ("v1", digest):
        assert requests.get(server.v2(f"{ns}/manifests/{ref}"), headers={"Accept": OCI_MANIFEST}).status_code == 404
    refused = audit.of("manifest.push", ns)
    assert len(refused) == 1 and refused[0].doc["digest"] == digest  # the unreachable attempt never arrived

    audit = receivers["audit"] = Receiver(port=audit.port).start()  # back, and accepting
    assert _put(server, ns, "v1", body).status_code == 201
    assert requests.get(server.v2(f"{ns}/manifests/v1"), headers={"Accept": OCI_MANIFEST}).status_code == 200
    assert [d.doc["digest"] for d in audit.of("manifest.push", ns)] == [digest]

    audit.status = 409
    r = requests.delete(server.v2(f"{ns}/manifests/{digest}"))
    assert r.status_code == 403, r.text
    assert requests.get(server.v2(f"{ns}/manifests/v1"), headers={"Accept": OCI_MANIFEST}).status_code == 200
    # The repository's list replaced the global one: "everything" heard nothing of this namespace.
    assert not receivers["everything"].of(namespace=ns)


def _metric(server, name: str, **labels) -> float:
    for line in requests.get(server.url + "/metrics").text.splitlines():
        if line.startswith(name + "{"):
            text, value = line.rsplit(" ", 1)
            found = dict(re.findall(r'(\w+)="([^"]*)"', text))
            if all(found.get(k) == v for k, v in labels.items()):
                return float(value)
    return 0.0


def test_a_failing_optional_webhook_lets_the_push_through_and_counts_the_failure(hooked):
    server, receivers = hooked
    notify = receivers["notify"]
    ns = f"loose/{uniq('app')}"
    failed_before = _metric(server, "angos_event_webhook_deliveries_total", webhook="notify", outcome="failed")
    body, digest, _ = _image(server, ns)
    r = _put(server, ns, "v1", body)
    assert r.status_code == 201, r.text
    assert requests.get(server.v2(f"{ns}/manifests/v1"), headers={"Accept": OCI_MANIFEST}).status_code == 200
    assert [d.doc["digest"] for d in notify.of("manifest.push", ns)] == [digest]
    assert wait_for(lambda: _metric(server, "angos_event_webhook_deliveries_total", webhook="notify",
                                    outcome="failed") >= failed_before + 1)
    assert _metric(server, "angos_event_webhook_delivery_duration_seconds_count", webhook="notify") >= 1
    assert _metric(server, "angos_event_webhook_deliveries_total", webhook="everything", outcome="delivered") >= 1


@pytest.fixture(scope="module")
def gated(tmp_path_factory):
    """One server whose ``gated/`` namespaces have a ``required`` webhook on pushes and pulls, with
    two retries; the receiver's ``status`` (and ``script``) decide. Tests restore ``status`` to 204."""
    gate = Receiver(TOKEN).start()
    extra = f"""
        [event_webhook.gate]
        url = "{gate.url}"
        policy = "required"
        events = ["manifest.push", "manifest.pull", "blob.pull"]
        token = "{TOKEN}"
        timeout = "5s"
        max_retries = 2

        [repository."gated"]
        event_webhooks = ["gate"]
        """
    workdir = tmp_path_factory.mktemp("angos-gated")
    port = free_port()
    server = AngosServer(workdir, angos_config(workdir / "data", port, 2, extra), port).start()
    yield server, gate
    server.stop(timeout=10)
    gate.stop()


def test_a_refused_pull_serves_nothing_and_a_head_is_not_a_pull(gated):
    server, gate = gated
    ns = f"gated/{uniq('pull')}"
    body, digest, layer = _image(server, ns)
    assert _put(server, ns, "v1", body).status_code == 201
    manifest_url, blob_url = server.v2(f"{ns}/manifests/v1"), server.v2(f"{ns}/blobs/{layer}")
    assert requests.get(manifest_url, headers={"Accept": OCI_MANIFEST}).content == body
    gate.status = 409
    try:
        for url in (manifest_url, blob_url):
            r = requests.get(url, headers={"Accept": OCI_MANIFEST})
            assert r.status_code == 403 and r.json()["errors"][0]["code"] == "DENIED", r.text
            assert "gate" in r.json()["errors"][0]["message"] and "Docker-Content-Digest" not in r.headers
        asked = gate.seen
        assert requests.head(manifest_url, headers={"Accept": OCI_MANIFEST}).status_code == 200
        assert requests.head(blob_url).status_code == 200
        assert gate.seen == asked  # HEADs are not pulls: the receiver was not asked
        gate.status = 503
        r = requests.get(blob_url)
        assert r.status_code == 503 and r.json()["errors"][0]["code"] == "UNAVAILABLE", r.text
    finally:
        gate.status = 204
    pulls = gate.of("blob.pull", ns)
    assert {d.doc["digest"] for d in pulls} == {layer} and all(d.signature_ok for d in pulls)


@pytest.mark.parametrize("status, answer", [
    (408, 503), (429, 503), (502, 503), (503, 503), (504, 503),  # "cannot be reached"
    (400, 403), (409, 403), (500, 403), (307, 403),  # any other answer refuses; a redirect is not followed
])
def test_which_answers_refuse_and_which_mean_unreachable(gated, status, answer):
    server, gate = gated
    ns = f"gated/{uniq('answer')}"
    body, _, _ = _image(server, ns)
    asked = gate.seen
    gate.status = status
    try:
        r = _put(server, ns, "v1", body)
    finally:
        gate.status = 204
    code = {503: "UNAVAILABLE", 403: "DENIED"}[answer]
    assert r.status_code == answer and r.json()["errors"][0]["code"] == code, r.text
    # One attempt and max_retries = 2 retries, all to the configured URL: a followed 307 would have
    # reached the receiver again (its Location is the receiver itself).
    assert gate.seen - asked == 3
    assert requests.get(server.v2(f"{ns}/manifests/v1"), headers={"Accept": OCI_MANIFEST}).status_code == 404


def test_a_required_delivery_is_retried_with_growing_pauses_and_a_late_acceptance_lets_the_push_through(gated):
    server, gate = gated
    ns = f"gated/{uniq('retry')}"
    body, digest, _ = _image(server, ns)
    gate.script[:] = [500, 500]  # then 204
    assert _put(server, ns, "v1", body).status_code == 201
    attempts = gate.of("manifest.push", ns)
    assert len(attempts) == 3 and len({d.body for d in attempts}) == 1  # the same event, byte for byte
    gaps = [b.at - a.at for a, b in zip(attempts, attempts[1:])]
    assert gaps[0] >= 0.1 and gaps[1] >= 0.2, gaps  # 100 ms, then 200 ms (at least: load only adds)
    assert requests.get(server.v2(f"{ns}/manifests/{digest}"), headers={"Accept": OCI_MANIFEST}).status_code == 200


def _async_config(url: str, timeout: str = "5s") -> str:
    return f"""
        [global]
        event_webhooks = ["later"]

        [event_webhook.later]
        url = "{url}"
        policy = "async"
        events = ["manifest.push", "tag.create"]
        token = "{TOKEN}"
        timeout = "{timeout}"
        """


def _webhook_jobs(server) -> list[dict]:
    r = requests.get(server.url + "/_ext/_jobs?queue=webhooks")
    assert r.status_code == 200, r.text
    return r.json()["jobs"]


def test_async_deliveries_survive_a_restart_with_the_receiver_down(angos_factory):
    receiver = Receiver(TOKEN)  # its port stays closed until the server has been restarted
    server = angos_factory(extra=_async_config(receiver.url))
    ns = uniq("app")
    body, digest, _ = _image(server, ns)
    assert _put(server, ns, "v1", body).status_code == 201
    def both_waiting():
        jobs = _webhook_jobs(server)
        return jobs if len(jobs) == 2 and all("cannot be reached" in (j.get("last_error") or "") for j in jobs) else None

    waiting = wait_for(both_waiting, what="both deliveries waiting for the unreachable receiver")
    assert {j["kind"] for j in waiting} == {"webhook.deliver"} and all(j["attempts"] == 0 for j in waiting)
    assert server.stop() == 0
    receiver.start()
    try:
        server.start()
        pushed = receiver.wait("manifest.push", ns)
        created = receiver.wait("tag.create", ns)
        wait_for(lambda: not _webhook_jobs(server), what="the webhooks queue to empty")
        pushed, created = receiver.of("manifest.push", ns), receiver.of("tag.create", ns)
        assert len(pushed) == 1 and len(created) == 1  # each delivered once, after the receiver returned
        assert pushed[0].doc["digest"] == created[0].doc["digest"] == digest
        assert pushed[0].signature_ok and created[0].signature_ok
        assert pushed[0].doc["id"] != created[0].doc["id"]
        assert {j["payload"]["event"]["id"] for j in waiting} == {pushed[0].doc["id"], created[0].doc["id"]}
    finally:
        receiver.stop()


def test_a_refused_async_delivery_is_retried_then_dead_lettered_and_a_retry_sends_the_same_event(angos_factory):
    receiver = Receiver(TOKEN, status=400).start()
    try:
        server = angos_factory(extra=_async_config(receiver.url).replace('timeout = "5s"', 'max_retries = 1'))
        ns = uniq("app")
        body, digest, _ = _image(server, ns)
        assert _put(server, ns, "v1", body).status_code == 201

        def dead_letters():
            r = requests.get(server.url + "/_ext/_jobs/failed?queue=webhooks")
            assert r.status_code == 200, r.text
            failed = r.json()["failed"]
            return failed if len(failed) == 2 else None

        failed = wait_for(dead_letters, what="both deliveries dead-lettered")
        assert all(j["attempts"] == 2 and "answered HTTP 400" in j["last_error"] for j in failed), failed
        refused = receiver.of("manifest.push", ns)
        assert len(refused) == 2 and refused[0].body == refused[1].body  # the same bytes on every attempt

        receiver.status = 204
        job = next(j for j in failed if j["payload"]["event"]["kind"] == "manifest.push")
        r = requests.post(server.url + f"/_ext/_jobs/failed/{job['storage_key']}/retry?queue=webhooks")
        assert r.status_code == 204, r.text
        wait_for(lambda: len(receiver.of("manifest.push", ns)) == 3, what="the retried delivery")
        again = receiver.of("manifest.push", ns)[-1]
        assert again.body == refused[0].body and again.doc["digest"] == digest and again.signature_ok
    finally:
        receiver.stop()


def test_a_hanging_async_receiver_slows_neither_pushes_nor_replication(angos_factory):
    receiver = Receiver(TOKEN).start()
    receiver.hang()
    try:
        peer = angos_factory()
        server = angos_factory(extra=_async_config(receiver.url, timeout="60s") + f"""
            [repository."r"]
            [[repository."r".downstream]]
            name = "peer"
            url = "{peer.url}"
            """)
        ns = f"r/{uniq('app')}"
        for tag in ("first", "second"):  # two deliveries each: the webhooks pool's 4 threads all held
            body, _, _ = _image(server, ns)
            assert _put(server, ns, tag, body).status_code == 201
        wait_for(lambda: receiver.seen >= 4, what="four deliveries held open by the receiver")
        for i in range(3):
            body, digest, _ = _image(server, ns)
            started = time.monotonic()
            assert _put(server, ns, f"v{i}", body).status_code == 201
            # A synchronous delivery would take the hook's 60 s timeout; this bound only rules that out.
            assert time.monotonic() - started < 15
        # Replication has its own pool: the last push reaches the peer while every webhook thread waits.
        wait_for(lambda: requests.head(peer.v2(f"{ns}/manifests/v2"), headers={"Accept": OCI_MANIFEST}).headers
                 .get("Docker-Content-Digest") == digest, timeout=60, what="the push replicated to the peer")
        assert receiver.seen >= 4 and not receiver.deliveries  # still held: nothing has been answered
    finally:
        receiver.stop()


def test_replication_receipts_and_retention_deletes_carry_the_internal_actor(angos_factory):
    receiver = Receiver(TOKEN).start()
    try:
        peer = angos_factory(extra=f"""
            [global]
            instance_name = "peer-b"

            [event_webhook.watch]
            url = "{receiver.url}"
            policy = "optional"
            events = ["manifest.push", "tag.create", "tag.delete", "manifest.delete"]
            token = "{TOKEN}"

            [repository."mirror"]
            event_webhooks = ["watch"]
            [repository."mirror".retention_policy]
            rules = ['image.tag == "keep"']
            """)
        source = angos_factory(extra=f"""
            [global]
            instance_name = "source-a"

            [repository."mirror"]
            [[repository."mirror".downstream]]
            name = "peer"
            url = "{peer.url}"
            """)
        ns = f"mirror/{uniq('app')}"
        for tag in ("keep", "drop"):
            body, _, _ = _image(source, ns)
            assert _put(source, ns, tag, body).status_code == 201
        created = receiver.wait("tag.create", ns, n=2)
        replication = {"kind": "internal", "id": "replication", "origin": "source-a"}
        assert sorted(d.doc["tag"] for d in created) == ["drop", "keep"]
        assert all(d.doc["actor"] == replication and d.signature_ok for d in created)
        assert all(d.doc["actor"] == replication for d in receiver.of("manifest.push", ns))

        res = scrub(peer, "--retention")
        assert res.returncode == 0, res.stdout + res.stderr
        deleted = receiver.of("tag.delete", ns)  # optional: delivered by scrub before it exited
        assert [d.doc["tag"] for d in deleted] == ["drop"]
        assert deleted[0].doc["actor"] == {"kind": "internal", "id": "retention"}
        assert [d.doc["actor"] for d in receiver.of("manifest.delete", ns)] == [{"kind": "internal", "id": "retention"}]
    finally:
        receiver.stop()



def test_async_deliveries_on_a_redis_queue_wait_for_a_worker_then_arrive_once(angos_factory, redis_server):
    # With [global.job_queue] the server only enqueues; `angos worker --queue webhooks` delivers.
    receiver = Receiver(TOKEN).start()
    worker = None
    try:
        server = angos_factory(extra=_async_config(receiver.url)
                               + f'\n[global.job_queue]\nbackend = "redis"\nurl = "{redis_server}"\n')
        ns = uniq("app")
        body, digest, _ = _image(server, ns)
        assert _put(server, ns, "v1", body).status_code == 201
        queued = wait_for(lambda: len(_webhook_jobs(server)) == 2 and _webhook_jobs(server),
                          what="both deliveries queued in Redis")
        assert {j["payload"]["event"]["kind"] for j in queued} == {"manifest.push", "tag.create"}
        assert receiver.of(namespace=ns) == []  # nothing drains this queue yet
        with open(server.workdir / "worker.log", "ab") as log:
            worker = subprocess.Popen(ANGOS + ["-c", str(server.config_path), "worker", "--queue", "webhooks"],
                                      cwd=server.workdir, stdout=log, stderr=subprocess.STDOUT,
                                      start_new_session=True)
        receiver.wait("manifest.push", ns)
        receiver.wait("tag.create", ns)
        wait_for(lambda: not _webhook_jobs(server), what="the webhooks queue to empty")
        pushed, created = receiver.of("manifest.push", ns), receiver.of("tag.create", ns)
        assert len(pushed) == 1 and len(created) == 1
        assert pushed[0].doc["digest"] == created[0].doc["digest"] == digest
        assert pushed[0].signature_ok and created[0].signature_ok
        assert {j["payload"]["event"]["id"] for j in queued} == {pushed[0].doc["id"], created[0].doc["id"]}
    finally:
        if worker is not None:
            worker.send_signal(signal.SIGTERM)
            worker.wait(30)
        receiver.stop()


def test_a_pull_through_fill_reports_its_manifests_with_the_cache_fill_actor_and_not_its_blobs(angos_factory):
    receiver = Receiver(TOKEN).start()
    try:
        upstream = angos_factory()
        ns = f"library/{uniq('app')}"
        body, digest, layer = _image(upstream, ns)
        assert _put(upstream, ns, "v1", body).status_code == 201
        cache = angos_factory(extra=f"""
            [event_webhook.watch]
            url = "{receiver.url}"
            policy = "optional"
            events = ["manifest.push", "tag.create", "blob.push"]
            token = "{TOKEN}"

            [repository."hub"]
            event_webhooks = ["watch"]
            [[repository."hub".upstream]]
            url = "{upstream.url}"
            """)
        local = f"hub/{ns}"
        r = requests.get(cache.v2(f"{local}/manifests/v1"), headers={"Accept": OCI_MANIFEST}, timeout=30)
        assert r.status_code == 200 and r.headers["Docker-Content-Digest"] == digest
        config = json.loads(body)["config"]["digest"]
        for blob in (config, layer):
            assert requests.get(cache.v2(f"{local}/blobs/{blob}"), timeout=30).status_code == 200
        # Every fill (the two above and the background ones the manifest queued) is over, and an
        # optional delivery is made before the write it reports returns: all there is has arrived.
        wait_for(lambda: requests.get(cache.url + "/_ext/_jobs", params={"queue": "cache"}, timeout=10)
                 .json()["jobs"] == [], what="the cache queue to empty")
        fill = {"kind": "internal", "id": "cache-fill"}
        pushed, created = receiver.of("manifest.push", local), receiver.of("tag.create", local)
        assert [d.doc["digest"] for d in pushed] == [digest] and [d.doc["tag"] for d in created] == ["v1"]
        assert all(d.doc["actor"] == fill and d.signature_ok for d in pushed + created)
        assert receiver.of("blob.push", local) == []
    finally:
        receiver.stop()
