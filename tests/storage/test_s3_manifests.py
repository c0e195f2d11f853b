"""tests/api/test_manifests.py against S3-backed servers (S3 blob and metadata stores,
S3 locks), with redirects off and on."""

from tests.api.test_manifests import *  # noqa: F401,F403

from .s3_api import on_s3

angos = on_s3(globals())
