"""The OCI Distribution ``/v2/`` API, one blueprint module per resource."""

from . import base, blobs, catalog, manifests, referrers, tags, uploads

BLUEPRINTS = [base.bp, uploads.bp, blobs.bp, manifests.bp, tags.bp, referrers.bp, catalog.bp]
