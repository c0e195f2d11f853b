"""End to end: an ``angos server`` whose only store is ``[blob_store.s3]`` (moto; metadata defaults
to it) and no ``[global.job_queue]`` keeps its replication jobs in the bucket under ``_jobs/``:
while the downstream is down the job is an object there (pending, then dead-lettered), and once
the downstream is back a retry through the admin API replicates the image and the objects go."""

from __future__ import annotations

import hashlib

import boto3
import requests

from tests.conftest import make_bucket, s3_source_config, wait_for
from tests.replication.conftest import remote_digest

OCI = "application/vnd.oci.image.manifest.v1+json"


def _push(server, ns: str, tag: str, seed: str) -> str:
    cfg = f'{{"seed": "{seed}"}}'.encode()
    d = "sha256:" + hashlib.sha256(cfg).hexdigest()
    assert requests.post(server.v2(f"{ns}/blobs/uploads/?digest={d}"), data=cfg, timeout=10).status_code == 201
    body = (f'{{"schemaVersion":2,"mediaType":"{OCI}","config":{{"mediaType":'
            f'"application/vnd.oci.image.config.v1+json","digest":"{d}","size":{len(cfg)}}},"layers":[]}}').encode()
    r = requests.put(server.v2(f"{ns}/manifests/{tag}"), data=body, headers={"Content-Type": OCI}, timeout=10)
    assert r.status_code == 201, r.text
    return "sha256:" + hashlib.sha256(body).hexdigest()


def test_replication_jobs_live_in_the_bucket_and_drain_when_the_downstream_returns(angos_factory, moto_server):
    bucket = make_bucket(moto_server)
    peer = angos_factory(start=False)
    source = angos_factory(config_text=s3_source_config(moto_server, bucket, f"http://127.0.0.1:{peer.port}",
                                                        'mode = "event-only"\n'))
    client = boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1", aws_access_key_id="test",
                          aws_secret_access_key="test")

    def keys(prefix: str) -> list[str]:
        return [o["Key"] for o in client.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", ())]

    def jobs(which: str = "") -> list:
        r = requests.get(f"{source.url}/_ext/_jobs{which}", params={"queue": "replication"}, timeout=10)
        assert r.status_code == 200, r.text
        return r.json()["failed" if which else "jobs"]

    digest = _push(source, "nginx/app", "v1", "one")
    # The downstream is down: the job waits (an outage spends no attempts) with its state in the bucket.
    pending = wait_for(lambda: keys("reg/_jobs/pending/replication/"), timeout=10, interval=0.01)
    assert pending, source.logs()
    assert any(k.startswith("reg/_jobs/keys/replication/") for k in keys("reg/_jobs/"))
    storage_key = pending[0].rsplit("/", 1)[1]
    waiting = wait_for(lambda: [j for j in jobs() if "down" in (j.get("last_error") or "")], timeout=30)
    assert [j["storage_key"] for j in waiting] == [storage_key] and waiting[0]["attempts"] == 0
    assert jobs("/failed") == [] and keys("reg/_jobs/failed/") == []

    peer.start()  # back: the job resumes on its own, no retry or reconcile needed
    assert wait_for(lambda: remote_digest(peer, "nginx/app", "v1") == digest, timeout=30), source.logs()
    # A push while the downstream is up replicates straight away, through the same bucket.
    d2 = _push(source, "nginx/app", "v2", "two")
    assert wait_for(lambda: remote_digest(peer, "nginx/app", "v2") == d2, timeout=30), source.logs()
    assert wait_for(lambda: keys("reg/_jobs/") == [], timeout=10), keys("reg/_jobs/")
    assert jobs() == [] and jobs("/failed") == []
    assert source.stop() == 0
    assert "ERROR angos" not in source.logs(), source.logs()  # nothing in the queue or the drain failed
