"""tests/test_skopeo.py's round trip against S3-backed servers, redirects off and on
(skopeo then fetches manifests and blobs from presigned S3 URLs)."""

from tests.test_skopeo import test_skopeo_round_trip_through_angos_preserves_digests  # noqa: F401

from .s3_api import on_s3

angos = on_s3(globals())
