"""Replication under failure: an outage, refused deletes, a credential that may write but not read,
immutable downstream tags and a drain process killed mid-push."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys

import requests
from argon2 import PasswordHasher

from ..conftest import ROOT, skopeo
from ..images import single_platform_image
from ..netem import SlowProxy
from ..conftest import wait_for
from .conftest import push_counts, remote_digest, source_config

OCI = "application/vnd.oci.image.manifest.v1+json"

def _source(peer_port: int, creds: bool = False, extra: str = "") -> str:
    ds = {"name": "peer", "url": f"http://127.0.0.1:{peer_port}"}
    if creds:
        ds.update(username="replicator", password="s3cret")
    return source_config(ds, extra=extra)

WORKER_QUEUE = """
[global.job_queue]
max_attempts = 60
retry_backoff_min_ms = 50
retry_backoff_max_ms = 400
pending_refresh_interval_secs = 5
"""


def _small_manifest(server, ns: str, seed: str) -> tuple[bytes, str]:
    cfg = f'{{"seed": "{seed}"}}'.encode()
    d = "sha256:" + hashlib.sha256(cfg).hexdigest()
    assert requests.post(server.v2(f"{ns}/blobs/uploads/?digest={d}"), data=cfg).status_code == 201
    body = (f'{{"schemaVersion":2,"mediaType":"{OCI}","config":{{"mediaType":'
            f'"application/vnd.oci.image.config.v1+json","digest":"{d}","size":{len(cfg)}}},"layers":[]}}').encode()
    return body, "sha256:" + hashlib.sha256(body).hexdigest()


def _worker(server) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "angos.cli", "-c", str(server.config_path), "worker"],
                            cwd=server.workdir, stdout=open(server.workdir / "worker.log", "ab"),
                            stderr=subprocess.STDOUT, start_new_session=True, env=dict(os.environ, PYTHONPATH=str(ROOT)))


def _jobs(server, which: str = "") -> list:
    r = requests.get(server.url + f"/_ext/_jobs{which}?queue=replication&n=1000")
    assert r.status_code == 200, r.text
    return r.json()["failed" if which else "jobs"]


def _gauge(server, name: str) -> float | None:
    for line in requests.get(server.url + "/metrics").text.splitlines():
        if line.startswith(f'{name}{{queue="replication"}}'):
            return float(line.rsplit(" ", 1)[1])
    return None


def test_downstream_outage_backlog_drains_when_it_returns(angos_factory):
    peer = angos_factory(start=False)
    source = angos_factory(config_text=_source(peer.port, extra=WORKER_QUEUE))
    worker = _worker(source)
    try:
        tags = {}
        for i in range(50):
            body, d = _small_manifest(source, "nginx/outage", f"tag{i}")
            r = requests.put(source.v2(f"nginx/outage/manifests/t{i}"), data=body, headers={"Content-Type": OCI})
            assert r.status_code == 201
            tags[f"t{i}"] = d
        assert wait_for(lambda: len(_jobs(source)) == 50, timeout=10)
        assert wait_for(lambda: (_gauge(source, "angos_job_queue_pending") or 0) > 0, timeout=10)
        peer.start()
        for tag, d in tags.items():
            assert wait_for(lambda t=tag, d=d: remote_digest(peer, "nginx/outage", t) == d, timeout=30)
        assert wait_for(lambda: _jobs(source) == [], timeout=10)
        assert wait_for(lambda: _gauge(source, "angos_job_queue_pending") == 0, timeout=15)
        assert _jobs(source, "/failed") == []
    finally:
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(30) == 0


def _locked_peer(angos_factory, *rules: str):
    """A deny-by-default peer with the identities ``replicator`` and ``auditor`` (password ``s3cret``)
    and ``rules``."""
    pw = PasswordHasher().hash("s3cret")
    listed = ", ".join(f'"{r}"' for r in rules)
    return angos_factory(config_text=f"""\
[server]
bind_address = "127.0.0.1"
port = @PORT@

[blob_store.fs]
root_dir = "@DATA@"

[auth.identity.replicator]
username = "replicator"
password = "{pw}"

[auth.identity.auditor]
username = "auditor"
password = "{pw}"

[global.access_policy]
default = "deny"
rules = [{listed}]
""")


def test_credential_without_delete_dead_letters_with_visible_error(angos_factory):
    peer = _locked_peer(angos_factory, "identity.id == 'replicator' && request.action != 'delete-manifest'")
    source = angos_factory(config_text=_source(peer.port, creds=True))
    body, d = _small_manifest(source, "nginx/nodelete", "x")
    assert requests.put(source.v2("nginx/nodelete/manifests/v1"), data=body,
                        headers={"Content-Type": OCI}).status_code == 201
    assert wait_for(lambda: remote_digest(peer, "nginx/nodelete", "v1") is None and requests.head(
        peer.v2("nginx/nodelete/manifests/v1"), auth=("replicator", "s3cret")).status_code == 200, timeout=10)
    assert requests.delete(source.v2("nginx/nodelete/manifests/v1")).status_code == 202
    failed = wait_for(lambda: _jobs(source, "/failed"), timeout=30)
    assert len(failed) == 1
    assert failed[0]["kind"] == "replication.sync"
    assert "403" in failed[0]["last_error"]
    assert failed[0]["attempts"] == failed[0]["max_attempts"]
    # The tag is still on the downstream: a refused delete loses nothing.
    assert requests.head(peer.v2("nginx/nodelete/manifests/v1"), auth=("replicator", "s3cret")).status_code == 200
    # The operator grants delete-manifest (hot reload) and retries the dead letter: the delete is applied.
    peer.config_path.write_text(peer.config_path.read_text().replace(" && request.action != 'delete-manifest'", ""))
    assert wait_for(lambda: requests.delete(peer.v2("nginx/nodelete/manifests/nope"),
                                            auth=("replicator", "s3cret")).status_code == 404, timeout=20)
    r = requests.post(source.url + f"/_ext/_jobs/failed/{failed[0]['storage_key']}/retry?queue=replication")
    assert r.status_code == 204, r.text
    assert wait_for(lambda: requests.head(peer.v2("nginx/nodelete/manifests/v1"),
                                          auth=("replicator", "s3cret")).status_code == 404, timeout=20)
    assert wait_for(lambda: _jobs(source) == [] and _jobs(source, "/failed") == [], timeout=10)


def test_a_write_only_credential_replicates_pushes_shared_blobs_and_deletes(angos_factory):
    # The operator guide's prerequisite for a downstream credential: put-manifest, delete-manifest and
    # blob uploads. Nothing to read (so no HEAD probe answers) and no mount: everything is sent.
    writes = "['put-manifest', 'delete-manifest', 'start-upload', 'update-upload', 'complete-upload']"
    peer = _locked_peer(angos_factory, f"identity.id == 'replicator' && request.action in {writes}",
                        "identity.id == 'auditor'")
    source = angos_factory(config_text=_source(peer.port, creds=True))
    auditor = ("auditor", "s3cret")

    def on_peer(ns: str, ref: str) -> int:
        return requests.head(peer.v2(f"{ns}/manifests/{ref}"), auth=auditor, headers={"Accept": OCI}).status_code

    assert requests.head(peer.v2("nginx/a/manifests/v1"), auth=("replicator", "s3cret")).status_code == 403
    body, d = _small_manifest(source, "nginx/a", "shared")
    assert requests.put(source.v2("nginx/a/manifests/v1"), data=body, headers={"Content-Type": OCI}).status_code == 201
    assert wait_for(lambda: on_peer("nginx/a", "v1") == 200, timeout=30), _jobs(source, "/failed")
    # The same config blob in a sibling namespace: a mount is refused (no mount-blob), so it is uploaded.
    body_b, _ = _small_manifest(source, "nginx/b", "shared")
    assert requests.put(source.v2("nginx/b/manifests/v1"), data=body_b,
                        headers={"Content-Type": OCI}).status_code == 201
    assert wait_for(lambda: on_peer("nginx/b", "v1") == 200, timeout=30), _jobs(source, "/failed")
    assert requests.delete(source.v2("nginx/a/manifests/v1")).status_code == 202
    assert wait_for(lambda: on_peer("nginx/a", "v1") == 404, timeout=30), _jobs(source, "/failed")
    assert on_peer("nginx/a", d) == 200  # a tag delete: the manifest stays, as on the source
    assert wait_for(lambda: _jobs(source) == [], timeout=10)
    assert _jobs(source, "/failed") == []


def test_immutable_tag_on_downstream_retries_then_dead_letters_not_superseded(angos_factory):
    peer = angos_factory(extra="[global]\nimmutable_tags = true\n")
    source = angos_factory(config_text=_source(peer.port))
    first, first_d = _small_manifest(peer, "nginx/imm", "downstream")
    assert requests.put(peer.v2("nginx/imm/manifests/v1"), data=first, headers={"Content-Type": OCI}).status_code == 201
    body, _ = _small_manifest(source, "nginx/imm", "source")
    assert requests.put(source.v2("nginx/imm/manifests/v1"), data=body, headers={"Content-Type": OCI}).status_code == 201
    failed = wait_for(lambda: _jobs(source, "/failed"), timeout=30)
    assert len(failed) == 1 and "CONFLICT" in failed[0]["last_error"]
    counts = push_counts(source)
    assert counts.get(("peer", "superseded"), 0) == 0
    assert counts.get(("peer", "failed"), 0) == failed[0]["max_attempts"]
    assert remote_digest(peer, "nginx/imm", "v1") == first_d


def test_killed_worker_mid_push_reruns_and_converges(angos_factory, tmp_path):
    peer = angos_factory()
    slow = SlowProxy(peer.port, 16 * 1024 * 1024).start()  # 16 MiB/s: the 64 MiB push takes seconds
    try:
        source = angos_factory(config_text=_source(slow.port, extra=WORKER_QUEUE))
        img = single_platform_image(tmp_path / "big", "v1", layer_sizes=(32 * 1024 * 1024, 32 * 1024 * 1024))
        skopeo("copy", "--dest-tls-verify=false", img.oci_ref, f"docker://{source.host}/nginx/big:v1")
        worker = _worker(source)
        # Kill it while the job runs: the downstream has opened an upload but not received the manifest.
        assert wait_for(lambda: any(
            line.startswith("http_requests_total{") and 'route="start-upload"' in line
            for line in requests.get(peer.url + "/metrics").text.splitlines()), timeout=20, interval=0.01)
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(10)
        assert remote_digest(peer, "nginx/big", "v1") is None
        assert [j["kind"] for j in _jobs(source)] == ["replication.sync"]
        worker = _worker(source)
        try:
            assert wait_for(lambda: remote_digest(peer, "nginx/big", "v1") == img.digest, timeout=60)
            assert wait_for(lambda: _jobs(source) == [], timeout=10)
            assert _jobs(source, "/failed") == []
        finally:
            worker.send_signal(signal.SIGTERM)
            worker.wait(30)
    finally:
        slow.stop()


def test_jobs_for_a_removed_downstream_fail_loudly_and_dead_letter(angos_factory):
    peer = angos_factory()
    source = angos_factory(config_text=_source(peer.port, extra=WORKER_QUEUE.replace(
        "max_attempts = 60", "max_attempts = 3")))
    body, _ = _small_manifest(source, "nginx/orphan", "orphan")
    assert requests.put(source.v2("nginx/orphan/manifests/v1"), data=body,
                        headers={"Content-Type": OCI}).status_code == 201
    assert [j["kind"] for j in _jobs(source)] == ["replication.sync"]
    # The operator renames the downstream before any worker ran the job.
    source.config_path.write_text(source.config_path.read_text().replace('name = "peer"', 'name = "renamed"'))
    worker = _worker(source)
    try:
        failed = wait_for(lambda: _jobs(source, "/failed"), timeout=30)
        assert len(failed) == 1
        assert "'peer' is no longer configured" in failed[0]["last_error"]
        assert failed[0]["attempts"] == 3
        assert "no longer configured" in (source.workdir / "worker.log").read_text()
        assert remote_digest(peer, "nginx/orphan", "v1") is None
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(30)


def test_a_reload_lets_a_running_job_finish_on_its_configuration(angos_factory, tmp_path):
    peer = angos_factory()
    slow = SlowProxy(peer.port, 8 * 1024 * 1024).start()  # 8 MiB/s: the 32 MiB push takes seconds
    try:
        source = angos_factory(config_text=_source(slow.port))
        img = single_platform_image(tmp_path / "big", "v1", layer_sizes=(32 * 1024 * 1024,))
        skopeo("copy", "--dest-tls-verify=false", img.oci_ref, f"docker://{source.host}/nginx/big:v1")
        assert wait_for(lambda: any(j.get("state") == "running" for j in _jobs(source)), timeout=20, interval=0.01)
        # A configuration change (a new downstream) while the push runs, applied by the server's reload.
        other = angos_factory()
        source.config_path.write_text(source.config_path.read_text() + (
            f'\n[[repository."nginx".downstream]]\nname = "other"\nurl = "{other.url}"\n'))
        drain = _drain_pid(source)
        os.kill(source.pid, signal.SIGHUP)
        assert wait_for(lambda: "configuration reloaded" in source.logs(), timeout=20)
        assert wait_for(lambda: remote_digest(peer, "nginx/big", "v1") == img.digest, timeout=60)
        assert wait_for(lambda: _jobs(source) == [], timeout=20)
        runs = {}
        for line in requests.get(source.url + "/metrics").text.splitlines():
            if line.startswith("angos_job_queue_runs_total{") and 'queue="replication"' in line:
                runs[line.split('outcome="')[1].split('"')[0]] = float(line.rsplit(" ", 1)[1])
        assert runs.get("lost", 0) == 0 and runs.get("retried", 0) == 0, runs   # never cut off or re-run
        assert runs.get("succeeded", 0) >= 1
        assert "reclaimed" not in source.logs()
        # The new downstream applies to jobs that start after the change.
        body, d = _small_manifest(source, "nginx/after", "x")
        assert requests.put(source.v2("nginx/after/manifests/v1"), data=body,
                            headers={"Content-Type": OCI}).status_code == 201
        try:
            wait_for(lambda: remote_digest(other, "nginx/after", "v1") == d, timeout=30,
                     what="the downstream added by the reload to receive nginx/after:v1")
        except AssertionError as exc:  # seen once in a loaded full run: keep what explains it
            raise AssertionError(f"{exc}\njobs: {_jobs(source)}\nfailed: {_jobs(source, '/failed')}\n"
                                 f"log:\n{source.logs()[-8000:]}") from None
        # The drain was never replaced (that would wait for, or past its stop timeout cut off, the
        # running job): it applied the change itself.
        assert _drain_pid(source) == drain and "replaced to apply" not in source.logs()
    finally:
        slow.stop()


def _drain_pid(server) -> int:
    out = subprocess.run(["pgrep", "-P", str(server.pid)], capture_output=True, text=True).stdout.split()
    pids = [int(p) for p in out if b"--in-process" in open(f"/proc/{p}/cmdline", "rb").read()]
    assert len(pids) == 1, pids
    return pids[0]
