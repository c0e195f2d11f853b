"""tests/api/test_listings.py against S3-backed servers (S3 blob and metadata stores,
S3 locks), redirects off (blob and manifest GETs, the only redirected paths, run with both in
test_s3_blobs.py and test_s3_manifests.py)."""

from tests.api.test_listings import *  # noqa: F401,F403

from .s3_api import on_s3

angos = on_s3(globals(), modes=("inline",))
