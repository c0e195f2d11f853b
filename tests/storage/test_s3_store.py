"""S3-only behaviour beyond the shared contract: unreachable endpoints surface as
StorageUnavailable, and abandoned multipart uploads are aborted by age
(``scrub --multipart``) within the store's key prefix only."""

from __future__ import annotations

import pytest

from angos.storage import StorageUnavailable
from tests.conftest import free_port

from .conftest import s3_store


def test_an_unreachable_endpoint_is_storage_unavailable_for_check_and_operations(s3_bucket):
    store = s3_store(f"http://127.0.0.1:{free_port()}", s3_bucket)
    store.connect_timeout = 0.5
    with pytest.raises(StorageUnavailable):
        store.check()
    with pytest.raises(StorageUnavailable):
        store.get("any/key")
    with pytest.raises(StorageUnavailable):
        store.put("any/key", b"x")


def test_a_missing_bucket_is_storage_unavailable(moto_server):
    with pytest.raises(StorageUnavailable):
        s3_store(moto_server, "no-such-bucket-here").check()


def test_abort_multipart_older_than_aborts_old_uploads_under_the_prefix_only(moto_server, s3_bucket):
    store = s3_store(moto_server, s3_bucket)
    neighbour = s3_store(moto_server, s3_bucket)
    mine = store.client.create_multipart_upload(Bucket=s3_bucket, Key=store._k("blobs/x"))["UploadId"]
    theirs = neighbour.client.create_multipart_upload(Bucket=s3_bucket, Key=neighbour._k("blobs/y"))["UploadId"]

    def open_ids():
        return {u["UploadId"] for u in store.client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads", [])}

    # moto reports a fixed 2010 "Initiated" time for every upload, so the age cut-off itself
    # cannot be exercised here; the prefix scoping and the abort are.
    assert mine in open_ids()
    listed = store.abort_multipart_older_than(60, dry_run=True)
    assert listed == [f"blobs/x ({mine})"] and mine in open_ids()
    assert store.abort_multipart_older_than(60) == listed
    assert mine not in open_ids() and theirs in open_ids()
    neighbour.abort_multipart_older_than(0)


def test_scrub_multipart_aborts_abandoned_uploads_of_the_blob_store(moto_server, tmp_path):
    import subprocess

    from tests.conftest import ANGOS, make_bucket

    from .conftest import s3_server_config

    bucket = make_bucket(moto_server)
    config = tmp_path / "config.toml"
    config.write_text(s3_server_config(free_port(), moto_server, bucket, True, workers=1))
    blobs = s3_store(moto_server, bucket, "blobs")
    upload = blobs.client.create_multipart_upload(Bucket=bucket, Key=blobs._k("blobs/sha256/ab/abandoned"))["UploadId"]

    def scrub(*flags):
        res = subprocess.run(ANGOS + ["-c", str(config), "scrub", "--multipart", "1h", *flags], cwd=tmp_path,
                             capture_output=True, text=True, timeout=60)
        assert res.returncode == 0, res.stderr
        return res.stdout

    preview = scrub("--dry-run")
    assert f"AbortMultipart upload=blobs/sha256/ab/abandoned ({upload})" in preview
    assert blobs.client.list_multipart_uploads(Bucket=bucket).get("Uploads")
    scrub()
    assert not blobs.client.list_multipart_uploads(Bucket=bucket).get("Uploads")
