"""The storage key layout. This is the only module that knows it.

Blob store::

    blobs/<alg>/<hex[:2]>/<hex>                 blob bytes (content addressed)
    uploads/<uuid>/data                         bytes of an upload session
    uploads/<uuid>/info                         session record (namespace, algorithm, start)
    upload-index/<ns entry>/<uuid>              a counted session of that namespace (upload_limits)
    quarantine/<alg>/<hex>                      bytes ``scrub --blobs`` found corrupt
    fills/<alg>/<hex>                           a pull-through fill in progress: its upload
                                                session and size (angos.cache.fills)

Metadata store::

    repositories/<ns>/_manifests/revisions/<alg>/<hex>   manifest revision (header line + body)
    repositories/<ns>/_manifests/bodies/<alg>/<hex>      bare manifest body, only on stores that
                                                          presign (S3): the target of a 307 redirect
    repositories/<ns>/_manifests/tags/<tag>              tag record {digest, created_at}
    repositories/<ns>/_layers/<alg>/<hex>                 ownership grant of a blob
    repositories/<ns>/_refs/<alg>/<hex>/<alg>-<hex>       "manifest M references blob/child B"
    repositories/<ns>/_referrers/<alg>/<hex>/<alg>-<hex>  referrer descriptor of subject S
    repositories/<ns>/_pulls/<alg>/<hex>                  last pull time of a revision
    repositories/<ns>/_tombstones/tags/<tag>              tag tombstone {digest, deleted_at}
    repositories/<ns>/_tombstones/digests/<alg>/<hex>     manifest tombstone {deleted_at, subject}
    repositories/<ns>/_replication/<ds entry>/<tag>       replication status of a tag on a downstream
                                                          (angos.replication.status)
    blob-index/<alg>/<hex>/<ns entry>                     which namespaces hold a grant
    _jobs/...                                             the job queue (angos.queue)
    _replication/conflicts/<inverted time>-<id>           a conflict record (angos.replication.conflicts)
    _replication/downstreams/<ds entry>                   a downstream's up/down and last success/error
    _replication/reconcile-runs                           the last ``angos replicate`` runs
                                                          (angos.replication.runs)
    _auth/token-keys/<kid>                                a registry token signing key (angos.auth.token_keys)
    _changes/<bucket>/<stamp>-<suffix>                    one tag change (angos.replication.changefeed)
    _changes/_meta                                        the feed's epoch and trim point
    _changes/_cursors/<repo entry>/<sha256 of name>       reconcile's last cursors for one downstream

Every function takes already-validated names, tags, digests and upload ids;
the validators in ``angos.oci`` guarantee none of them can contain ``..`` or
start with ``/``.

**Name lengths.** No file name this layout builds is longer than
:data:`MAX_FILE_NAME` (200) bytes, whatever valid input it gets, which leaves
room under the common 255-byte limit for a backend's temporary names. Most
names are bounded by their grammar (tags are at most 128 characters, digests
``<alg>-<128 hex>``, upload ids 36). Directories named after namespace
components are at most 255 (the name limit) and never carry a suffix. The names
built from a whole namespace (blob-index entries, the upload-index
directory) are :func:`ns_entry`, and those built from a downstream's
configured name are :func:`downstream_entry` (percent-encoded, bounded the
same way):

- the namespace with ``/`` written ``%2F`` when that is at most 200 bytes
  (the layout every earlier version wrote, so existing entries keep working);
- otherwise its first :data:`_KEPT` bytes, ``%23`` and the sha256 of the whole
  name (``nginx%2Fteam%2F...%23<64 hex>``): readable enough to recognise. A
  blob-index entry's body holds the full name, which :func:`ns_from_entry`
  cannot recover from such a key (it returns None for these).

Earlier versions wrote longer entries in the readable form too (on S3 they
succeeded; on a filesystem up to 218 bytes did). :func:`legacy_blob_index`
names such an entry so revokes remove it and ``scrub --blobs`` can move it to
the bounded form; listings read it as before.
"""

from __future__ import annotations

import hashlib
from urllib.parse import quote

from ..oci.digest import Digest

MAX_FILE_NAME = 200
_HASHED_MARK = "%23"
_KEPT = MAX_FILE_NAME - len(_HASHED_MARK) - 64

REPOS = "repositories"


def blob_data(d: Digest) -> str:
    return f"blobs/{d.algorithm}/{d.hex[:2]}/{d.hex}"


BLOBS = "blobs"
BLOB_INDEX = "blob-index"


def quarantine(d: Digest) -> str:
    return f"quarantine/{d.algorithm}/{d.hex}"


def fill_record(d: Digest) -> str:
    return f"fills/{d.algorithm}/{d.hex}"


FILLS = "fills"


def upload_dir(upload_id: str) -> str:
    return f"uploads/{upload_id}"


def upload_data(upload_id: str) -> str:
    return f"uploads/{upload_id}/data"


def upload_info(upload_id: str) -> str:
    return f"uploads/{upload_id}/info"


UPLOADS = "uploads"
UPLOAD_INDEX = "upload-index"


def upload_markers_dir(ns: str) -> str:
    return f"{UPLOAD_INDEX}/{ns_entry(ns)}"


def upload_marker(ns: str, upload_id: str) -> str:
    return f"{UPLOAD_INDEX}/{ns_entry(ns)}/{upload_id}"


def upload_marker_entry(entry: str, upload_id: str) -> str:
    """The key of a marker as listed: ``entry`` is a child of :data:`UPLOAD_INDEX`."""
    return f"{UPLOAD_INDEX}/{entry}/{upload_id}"


def namespace_dir(ns: str) -> str:
    return f"{REPOS}/{ns}"


def revision(ns: str, d: Digest) -> str:
    return f"{REPOS}/{ns}/_manifests/revisions/{d.algorithm}/{d.hex}"


def manifest_body(ns: str, d: Digest) -> str:
    return f"{REPOS}/{ns}/_manifests/bodies/{d.algorithm}/{d.hex}"


def revisions_dir(ns: str) -> str:
    return f"{REPOS}/{ns}/_manifests/revisions"


def tag(ns: str, name: str) -> str:
    return f"{REPOS}/{ns}/_manifests/tags/{name}"


def tags_dir(ns: str) -> str:
    return f"{REPOS}/{ns}/_manifests/tags"


def grant(ns: str, d: Digest) -> str:
    return f"{REPOS}/{ns}/_layers/{d.algorithm}/{d.hex}"


def grants_dir(ns: str) -> str:
    return f"{REPOS}/{ns}/_layers"


def ref_marker(ns: str, target: Digest, manifest: Digest) -> str:
    return f"{REPOS}/{ns}/_refs/{target.algorithm}/{target.hex}/{manifest.algorithm}-{manifest.hex}"


def refs_root(ns: str) -> str:
    return f"{REPOS}/{ns}/_refs"


def referrers_root(ns: str) -> str:
    return f"{REPOS}/{ns}/_referrers"


def ref_dir(ns: str, target: Digest) -> str:
    return f"{REPOS}/{ns}/_refs/{target.algorithm}/{target.hex}"


def referrer(ns: str, subject: Digest, manifest: Digest) -> str:
    return f"{REPOS}/{ns}/_referrers/{subject.algorithm}/{subject.hex}/{manifest.algorithm}-{manifest.hex}"


def referrers_dir(ns: str, subject: Digest) -> str:
    return f"{REPOS}/{ns}/_referrers/{subject.algorithm}/{subject.hex}"


def pull_time(ns: str, d: Digest) -> str:
    return f"{REPOS}/{ns}/_pulls/{d.algorithm}/{d.hex}"


def tag_tombstone(ns: str, name: str) -> str:
    return f"{REPOS}/{ns}/_tombstones/tags/{name}"


def tag_tombstones_dir(ns: str) -> str:
    return f"{REPOS}/{ns}/_tombstones/tags"


def digest_tombstone(ns: str, d: Digest) -> str:
    return f"{REPOS}/{ns}/_tombstones/digests/{d.algorithm}/{d.hex}"


def digest_tombstones_dir(ns: str) -> str:
    return f"{REPOS}/{ns}/_tombstones/digests"


def _readable_entry(ns: str) -> str:
    return ns.replace("/", "%2F")


def ns_entry(ns: str) -> str:
    """One file name standing for namespace ``ns``, at most :data:`MAX_FILE_NAME` bytes."""
    readable = _readable_entry(ns)
    if len(readable) <= MAX_FILE_NAME:
        return readable
    return f"{readable[:_KEPT]}{_HASHED_MARK}{hashlib.sha256(ns.encode()).hexdigest()}"


def ns_from_entry(name: str) -> str | None:
    """The namespace an entry names, or None for a hashed entry (its body holds the name)."""
    if _HASHED_MARK in name:
        return None
    return name.replace("%2F", "/")


def downstream_entry(name: str) -> str:
    """One file name standing for a configured downstream name (any string): every character but
    letters, digits, ``-`` and ``_`` percent-encoded (so never ``.``, ``..`` or a ``/``), at most
    :data:`MAX_FILE_NAME` bytes like :func:`ns_entry`; ``%`` alone for the empty name."""
    readable = quote(name, safe="-_").replace(".", "%2E").replace("~", "%7E") or "%"
    if len(readable) <= MAX_FILE_NAME:
        return readable
    return f"{readable[:_KEPT]}{_HASHED_MARK}{hashlib.sha256(name.encode()).hexdigest()}"


def replication_status(ns: str, downstream: str, tag: str) -> str:
    return f"{REPOS}/{ns}/_replication/{downstream_entry(downstream)}/{tag}"


def replication_status_dir(ns: str, downstream: str) -> str:
    return f"{REPOS}/{ns}/_replication/{downstream_entry(downstream)}"


def replication_status_root(ns: str) -> str:
    return f"{REPOS}/{ns}/_replication"


def replication_status_entry(ns: str, entry: str, tag: str) -> str:
    """The record of ``tag`` under ``entry``, a child of :func:`replication_status_root` as listed."""
    return f"{REPOS}/{ns}/_replication/{entry}/{tag}"


def replication_downstream(downstream: str) -> str:
    return f"_replication/downstreams/{downstream_entry(downstream)}"


def blob_index(d: Digest, ns: str) -> str:
    return f"blob-index/{d.algorithm}/{d.hex}/{ns_entry(ns)}"


def legacy_blob_index(d: Digest, ns: str) -> str | None:
    """The unbounded key an earlier version wrote for a long ``ns``; None when it is :func:`blob_index`."""
    readable = _readable_entry(ns)
    return None if len(readable) <= MAX_FILE_NAME else f"blob-index/{d.algorithm}/{d.hex}/{readable}"


def blob_index_dir(d: Digest) -> str:
    return f"blob-index/{d.algorithm}/{d.hex}"


def blob_index_entry(d: Digest, name: str) -> str:
    """The key of entry ``name`` as listed under :func:`blob_index_dir`."""
    return f"blob-index/{d.algorithm}/{d.hex}/{name}"


def digest_from_entry(name: str) -> Digest:
    """Inverse of the ``<alg>-<hex>`` entry names used by markers and referrers."""
    alg, _, hexpart = name.partition("-")
    return Digest.parse(f"{alg}:{hexpart}")


JOBS = "_jobs"


CONFLICTS = "_replication/conflicts"


def conflict(record_id: str) -> str:
    """A conflict record; ``record_id`` is ``<17 digits>-<12 hex>`` (checked by the caller)."""
    return f"{CONFLICTS}/{record_id}"


def reconcile_runs() -> str:
    """The record of the last ``angos replicate`` runs (one small JSON object per instance)."""
    return "_replication/reconcile-runs"


TOKEN_KEYS = "_auth/token-keys"


def token_key(kid: str) -> str:
    """A token signing key; ``kid`` is ``<digits>-<digits>`` (its period's start and length in days)."""
    return f"{TOKEN_KEYS}/{kid}"


CHANGES = "_changes"


def change_bucket(bucket: str) -> str:
    """A directory of change-feed entries; ``bucket`` is the first digits of their stamps."""
    return f"{CHANGES}/{bucket}"


def change_entry(bucket: str, name: str) -> str:
    return f"{CHANGES}/{bucket}/{name}"


def change_meta() -> str:
    return f"{CHANGES}/_meta"


def change_cursors(repo_key: str, downstream: str) -> str:
    """Where reconcile keeps the cursors it last saw for one downstream of one repository.
    Downstream names are free text, so the file is named by their hash (the body holds the name)."""
    return f"{CHANGES}/_cursors/{ns_entry(repo_key)}/{hashlib.sha256(downstream.encode()).hexdigest()}"
