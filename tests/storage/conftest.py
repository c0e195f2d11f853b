"""Storage fixtures: ``store`` is parametrized over every ObjectStore backend
(a filesystem root, and S3 on a real moto server with a fresh key prefix), so
one conformance suite runs unchanged against each."""

from __future__ import annotations

import uuid

import pytest

from angos.storage.fs import FsStore
from tests.conftest import make_bucket

SMALL_PART = 5 * 1024 * 1024


@pytest.fixture(scope="session")
def s3_bucket(moto_server):
    return make_bucket(moto_server)


def s3_store(endpoint: str, bucket: str, prefix: str | None = None, **kw):
    from angos.storage.s3 import S3Store

    return S3Store(bucket, endpoint, "us-east-1", "test", "test", prefix or f"t-{uuid.uuid4().hex[:8]}",
                   multipart_part_size=kw.pop("part", SMALL_PART), **kw)


@pytest.fixture(params=["fs", "s3"])
def store(request, tmp_path):
    if request.param == "fs":
        return FsStore(str(tmp_path / "root"))
    endpoint = request.getfixturevalue("moto_server")
    bucket = request.getfixturevalue("s3_bucket")
    return s3_store(endpoint, bucket)
