"""The OCI error table and the domain exception hierarchy.

Every error the registry can answer is an :class:`OciError` subclass carrying
its OCI ``code``, a message and the HTTP status. The API layer has exactly one
handler that renders these as ``{"errors": [{code, message, detail}]}``; the
core raises them without knowing about HTTP frameworks.
"""

from __future__ import annotations


class AngosError(Exception):
    """Root of every error Angos raises on purpose."""


class OciError(AngosError):
    code = "UNKNOWN"
    status = 500
    default_message = "unknown error"

    def __init__(self, message: str | None = None, detail=None, status: int | None = None):
        super().__init__(message or self.default_message)
        self.message = message or self.default_message
        self.detail = detail
        if status is not None:
            self.status = status

    def to_json(self) -> dict:
        err = {"code": self.code, "message": self.message}
        if self.detail is not None:
            err["detail"] = self.detail
        return {"errors": [err]}


def _oci(name: str, code: str, status: int, message: str) -> type[OciError]:
    return type(name, (OciError,), {"code": code, "status": status, "default_message": message})


# code, HTTP status and default message, in one place (distribution-spec error codes).
BlobUnknown = _oci("BlobUnknown", "BLOB_UNKNOWN", 404, "blob unknown to registry")
BlobUploadInvalid = _oci("BlobUploadInvalid", "BLOB_UPLOAD_INVALID", 400, "blob upload invalid")
BlobUploadUnknown = _oci("BlobUploadUnknown", "BLOB_UPLOAD_UNKNOWN", 404, "blob upload unknown to registry")
DigestInvalid = _oci("DigestInvalid", "DIGEST_INVALID", 400, "provided digest did not match uploaded content")
ManifestBlobUnknown = _oci("ManifestBlobUnknown", "MANIFEST_BLOB_UNKNOWN", 404,
                           "manifest references a manifest or blob unknown to registry")
ManifestInvalid = _oci("ManifestInvalid", "MANIFEST_INVALID", 400, "manifest invalid")
ManifestUnknown = _oci("ManifestUnknown", "MANIFEST_UNKNOWN", 404, "manifest unknown to registry")
NameInvalid = _oci("NameInvalid", "NAME_INVALID", 400, "invalid repository name")
NameUnknown = _oci("NameUnknown", "NAME_UNKNOWN", 404, "repository name not known to registry")
SizeInvalid = _oci("SizeInvalid", "SIZE_INVALID", 400, "provided length did not match content length")
TagInvalid = _oci("TagInvalid", "TAG_INVALID", 400, "manifest tag did not match URI")
Unauthorized = _oci("Unauthorized", "UNAUTHORIZED", 401, "authentication required")
Denied = _oci("Denied", "DENIED", 403, "requested access to the resource is denied")
Unsupported = _oci("Unsupported", "UNSUPPORTED", 400, "the operation is unsupported")
Conflict = _oci("Conflict", "CONFLICT", 409, "the operation conflicts with the current state")
ReplicationSuperseded = _oci("ReplicationSuperseded", "REPLICATION_SUPERSEDED", 409,
                            "a newer write to this reference already exists")
RangeInvalid = _oci("RangeInvalid", "BLOB_UPLOAD_INVALID", 416, "requested range not satisfiable")
# A blob GET whose Range cannot be met. The spec's table has no range code and codes must come
# from it; clients act on the 416 and the ``Content-Range: bytes */<size>`` header.
RangeNotSatisfiable = _oci("RangeNotSatisfiable", "BLOB_UNKNOWN", 416, "requested range not satisfiable")
TooLarge = _oci("TooLarge", "SIZE_INVALID", 413, "payload too large")
TooManyRequests = _oci("TooManyRequests", "TOOMANYREQUESTS", 429, "too many requests")
Unavailable = _oci("Unavailable", "UNAVAILABLE", 503, "a backend the registry depends on is unavailable")
# A request body that stopped arriving (server.body_timeout_secs). The spec's table has no timeout
# code; the body that did arrive is shorter than announced, which is what SIZE_INVALID says.
BodyTimeout = _oci("BodyTimeout", "SIZE_INVALID", 408, "the request body stopped arriving")
# A pull-through upstream answered, but with something unusable (bytes that do not match their digest,
# a truncated body, a manifest over the size limit, an unexpected status): nothing of it is stored.
BadGateway = _oci("BadGateway", "UNAVAILABLE", 502, "the upstream registry sent an unusable answer")
# A write to a pull-through namespace: its content comes from the upstream only (deletes are allowed).
# A change-feed cursor older than the feed's trim point (``GET /_ext/_changes``): the changes after
# it are partly gone, so the reader must compare everything again. An Angos extension code, like
# REPLICATION_SUPERSEDED: no spec code says "gone".
CursorExpired = _oci("CursorExpired", "CURSOR_EXPIRED", 410, "the change feed was trimmed past this cursor")
PullThroughReadOnly = _oci("PullThroughReadOnly", "UNSUPPORTED", 405,
                           "this namespace is a pull-through cache: push to its upstream instead")


class BlobReferenced(OciError):
    """A blob delete refused because manifests in the namespace still reference it."""
    code = "DENIED"
    status = 405
    default_message = "blob is referenced by manifests in this namespace"
