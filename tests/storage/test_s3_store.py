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
    assert store.abort_multipart_older_than(60) == 1
    assert mine not in open_ids() and theirs in open_ids()
    neighbour.abort_multipart_older_than(0)
