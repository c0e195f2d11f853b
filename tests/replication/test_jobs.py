"""Replication job kinds across an upgrade: jobs the previous release queued (``replication.push``,
``replication.delete``, keyed its own way) still run after the upgrade, each sending the reference's
current state like ``replication.sync`` (README, Upgrade)."""

from __future__ import annotations

import signal
import subprocess

import requests

from angos.config import load_config
from angos.queue.core import JobQueue

from ..api.helpers import push_image
from ..conftest import ANGOS, wait_for
from .conftest import _queued, remote_digest, source_config


def test_jobs_queued_by_the_previous_release_replicate_a_push_and_a_delete(angos_factory):
    peer = angos_factory()
    # [global.job_queue]: the source only enqueues, so the test decides which jobs a worker finds.
    source = angos_factory(config_text=source_config({"name": "peer", "url": peer.url}, extra="[global.job_queue]\n"))
    ns = "nginx/legacy"
    push_image(peer, ns, tag="gone")  # replicated before the upgrade, deleted on the source since
    pushed, _, _, _ = push_image(source, ns, tag="v1")
    push_image(source, ns, tag="gone")
    assert requests.delete(source.v2(f"{ns}/manifests/gone")).status_code == 202
    for job in _queued(source):  # this release's own sync jobs for them: not what this test is about
        r = requests.delete(source.url + f"/_ext/_jobs/pending/{job['storage_key']}", params={"queue": "replication"})
        assert r.status_code == 204, r.text
    assert _queued(source) == []
    queue = JobQueue(load_config([str(source.config_path)]), "replication")
    for kind, key, ref in (("replication.push", "push|peer|nginx/legacy|v1", "v1"),
                           ("replication.delete", "delete|peer|nginx/legacy|gone", "gone")):
        assert queue.submit(kind, key, {"repository": "nginx", "downstream": "peer", "namespace": ns,
                                        "reference": ref})
    assert {j["kind"] for j in _queued(source)} == {"replication.push", "replication.delete"}

    with open(source.workdir / "worker.log", "ab") as log:
        worker = subprocess.Popen(ANGOS + ["-c", str(source.config_path), "worker", "--queue", "replication"],
                                  cwd=source.workdir, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for(lambda: _queued(source) == [], timeout=60, what="the legacy jobs to run")
        assert remote_digest(peer, ns, "v1") == pushed
        assert remote_digest(peer, ns, "gone") is None
        failed = requests.get(source.url + "/_ext/_jobs/failed", params={"queue": "replication"}).json()["failed"]
        assert failed == [], failed
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(30)
