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


def s3_server_config(port: int, endpoint: str, bucket: str, redirect: bool, lock: str | None = None,
                     workers: int = 2, extra: str = "", prefix: str = "") -> str:
    """An allow-all server whose blob and metadata stores are both S3 (one bucket, two key prefixes).

    ``lock`` is the metadata lock strategy as a TOML table body (default: the s3 strategy).
    """
    flag = "true" if redirect else "false"
    lock = lock or "[metadata_store.s3.lock_strategy.s3]\n"
    return f"""\
[server]
bind_address = "127.0.0.1"
port = {port}
workers = {workers}

[global]
enable_blob_redirect = {flag}
enable_manifest_redirect = {flag}

[global.access_policy]
default = "allow"

[blob_store.s3]
endpoint = "{endpoint}"
bucket = "{bucket}"
access_key_id = "test"
secret_key = "test"
key_prefix = "{prefix}blobs"
multipart_part_size = "5MiB"

[metadata_store.s3]
endpoint = "{endpoint}"
bucket = "{bucket}"
access_key_id = "test"
secret_key = "test"
key_prefix = "{prefix}meta"

{lock}
{extra}"""


def _s3_server(tmp_path_factory, endpoint: str, redirect: bool):
    from tests.conftest import AngosServer, free_port

    workdir = tmp_path_factory.mktemp("angos-s3")
    port = free_port()
    return AngosServer(workdir, s3_server_config(port, endpoint, make_bucket(endpoint), redirect), port).start()


@pytest.fixture(scope="session")
def s3_angos(tmp_path_factory, moto_server):
    """An S3-backed server (S3 locks) with redirects off: every body is served inline."""
    server = _s3_server(tmp_path_factory, moto_server, redirect=False)
    yield server
    server.stop(timeout=10)


@pytest.fixture(scope="session")
def s3_angos_redirect(tmp_path_factory, moto_server):
    """The same with blob and manifest redirects on (the defaults)."""
    server = _s3_server(tmp_path_factory, moto_server, redirect=True)
    yield server
    server.stop(timeout=10)
