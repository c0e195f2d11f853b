"""The replication pipeline: make one reference on one downstream match local state.

:meth:`Pipeline.sync` reads the reference's *current* local state when the job
runs (never the state at enqueue time, so however many changes coalesced the
newest wins) and acts on it:

- a tag or a manifest → push it, in this order so the downstream never holds
  a manifest before its content:

  1. HEAD the manifest on the downstream: the same digest is ``converged``.
  2. Child manifests of an index, recursively, each pushed by digest.
  3. Blobs: HEAD each; a missing one is mounted from a sibling namespace the
     downstream already has it in, else streamed; at most
     ``max_concurrent_pushes`` transfers at once.
  4. PUT the manifest with ``X-Angos-Source-Timestamp`` (the author time) and
     ``X-Angos-Source-Instance`` (the instance it was authored on, when known).
     A manifest with a ``subject`` on a downstream without the referrers API
     (no ``OCI-Subject`` in the answer) asks for its fallback tag to be rebuilt.

  A credential that may write but not read gets ``401``/``403`` on the
  probes of steps 1–3: they count as "not there" (everything is sent), and a
  refused mount falls back to an ordinary upload.

- a tombstone → DELETE with the delete's author time (and origin);
- nothing (never written, or forgotten past the tombstone horizon) → nothing.

:meth:`Pipeline.rebuild_fallback` rebuilds a subject's OCI 1.0 referrers
fallback index on a downstream without the referrers API from the local
referrers (pushing any the downstream lacks): the whole index is written from
local state, never read-modify-written, and it runs under its own queue key.

Results are :class:`Outcome` values; a superseded one names the winner the
downstream reported and the write this job sent (the loser). Failures raise
:class:`ReplicationFailed` (a rejection a retry cannot change counts an attempt) or its subclass
:class:`DownstreamUnavailable` (refused, timed out, 5xx, 408, 429: the
downstream is down and the job waits for it without spending attempts).
Every blob and manifest the downstream accepts adds its size to
``angos_replication_sent_bytes_total{downstream}``.
"""

from __future__ import annotations

import json
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable

from .. import metrics as m
from ..oci import media_types as mt
from ..oci.digest import Digest, is_digest
from ..oci.manifest import parse_manifest
from ..oci.reference import referrers_tag
from ..registry.tags import TagRecord
from ..registry.tombstones import Tombstone
from .client import ClientError, DownstreamClient
from .mapping import Target, remote_namespace

log = logging.getLogger("angos.replication.pipeline")
MAX_WINNER_FIELD = 256  # a tag (128), a digest, an RFC 3339 time or an instance id, with room to spare

PUSHED, CONVERGED, SUPERSEDED, UNSUPPORTED, NOOP = "pushed", "converged", "superseded", "unsupported", "noop"
OUTAGE_STATUSES = (408, 429)
# The downstream credential may write without reading (the operator guide asks only for put-manifest,
# delete-manifest and blob uploads): a probe it may not make tells nothing, so the content is sent and
# the write itself is what the downstream's policy decides.
UNREADABLE = (401, 403)


class ReplicationFailed(Exception):
    def __init__(self, message: str, retryable: bool = True):
        super().__init__(message)
        self.retryable = retryable


class DownstreamUnavailable(ReplicationFailed):
    """The downstream cannot be reached or cannot take work now; a later try can succeed."""

    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(frozen=True)
class Winner:
    """What the downstream holds when it refused a write as superseded (its 409's ``detail``)."""
    tag: str | None
    digest: str | None      # None: the winner is a delete
    author_time: str | None
    origin: str | None = None  # the instance the winner was authored on (None: not said)


@dataclass(frozen=True)
class Sent:
    """The write a job sent: a push of ``digest``, or a delete (``digest`` None)."""
    reference: str
    digest: str | None
    author_time: str | None
    origin: str | None


@dataclass(frozen=True)
class Outcome:
    result: str
    detail: str = ""
    winner: Winner | None = None  # set for SUPERSEDED when the downstream said what won
    sent: Sent | None = None      # set for SUPERSEDED: the write that lost


def _winner(resp) -> Winner | None:
    """The winner named by a ``REPLICATION_SUPERSEDED`` answer, if the downstream names one (Angos does)."""
    try:
        errors = resp.json().get("errors") or []
        detail = errors[0].get("detail") if errors else None
    except (ValueError, AttributeError, IndexError, RecursionError):
        return None
    if not isinstance(detail, dict):
        return None
    fields = {k: detail.get(k) for k in ("tag", "digest", "author_time", "origin")}
    # Kept in conflict records and logs: what a downstream says is bounded before it is believed.
    if not all(v is None or isinstance(v, str) and len(v) <= MAX_WINNER_FIELD for v in fields.values()):
        return None
    return Winner(**fields)


def _error_code(resp) -> str | None:
    try:
        errors = resp.json().get("errors") or []
        code = errors[0].get("code") if errors else None
    except (ValueError, AttributeError, IndexError, RecursionError):
        return None
    return code[:100] if isinstance(code, str) else None


def _describe(resp) -> str:
    code = _error_code(resp)
    text = code or (resp.text or "")[:200].strip()
    return f"{resp.request.method} {resp.url} answered {resp.status_code}" + (f" {text}" if text else "")


def _retry_after(resp) -> float | None:
    try:
        return float(resp.headers.get("Retry-After", ""))
    except ValueError:
        return None


def failure(resp) -> ReplicationFailed:
    """The exception for an unexpected answer: an outage (5xx, 408, 429) or a rejection."""
    if resp.status_code >= 500 or resp.status_code in OUTAGE_STATUSES:
        return DownstreamUnavailable(_describe(resp), _retry_after(resp))
    return ReplicationFailed(_describe(resp))


class Pipeline:
    """Replicates one local namespace to one downstream target."""

    def __init__(self, registry, client: DownstreamClient, ds, repo_key: str, namespace: str, target: Target,
                 on_referrer: Callable[[str], None] | None = None):
        """``on_referrer(subject)`` asks for ``subject``'s fallback tag on this downstream to be rebuilt."""
        self.registry = registry
        self.client = client
        self.ds = ds
        self.repo_key = repo_key
        self.ns = namespace
        self.target = target
        self.remote = target.namespace
        self.on_referrer = on_referrer or (lambda subject: None)

    def _sent(self, n: int) -> None:
        """Count ``n`` bytes the downstream accepted (``angos_replication_sent_bytes_total``)."""
        m.REPLICATION_SENT_BYTES.labels(self.ds.name).inc(n)

    def sync(self, reference: str, prune_at: str | None = None) -> Outcome:
        """Make ``reference`` on the downstream match its current local state (with ``prune_at``, a
        reference unknown here is deleted there, stamped with that time)."""
        try:
            return self._sync(reference, prune_at)
        except ClientError as exc:
            raise DownstreamUnavailable(str(exc)) from exc

    def _sync(self, reference: str, prune_at: str | None) -> Outcome:
        manifests = self.registry.manifests
        if is_digest(reference):
            d = Digest.parse(reference)
            if manifests.has_revision(self.ns, d):
                return self._push(reference)
            tomb = manifests.tombstones.digest(self.ns, d)
            if tomb is not None:
                return self._delete(reference, tomb.deleted_at, tomb.subject, tomb.origin)
            return Outcome(NOOP, f"manifest {self.ns}@{d} is unknown here")
        state = manifests.tag_state(self.ns, reference)
        if isinstance(state, TagRecord):
            return self._push(reference)
        if isinstance(state, Tombstone):
            return self._delete(reference, state.deleted_at, None, state.origin)
        if prune_at is not None:  # a prune is this instance's own decision
            return self._delete(reference, prune_at, None, manifests.instance_name)
        return Outcome(NOOP, f"tag {self.ns}:{reference} is unknown here")

    # ------------------------------------------------------------------ push

    def _push(self, reference: str) -> Outcome:
        manifests = self.registry.manifests
        if is_digest(reference):
            d = Digest.parse(reference)
            source_ts = origin = None
        else:
            rec = manifests.tag_record(self.ns, reference)
            if rec is None:  # deleted since sync() looked: the next run sends the delete
                return Outcome(NOOP, f"tag {self.ns}:{reference} no longer exists locally")
            d = Digest.parse(rec.digest)
            source_ts, origin = rec.created_at, rec.origin
        rev = manifests.revision(self.ns, d)
        if rev is None:
            return Outcome(NOOP, f"manifest {self.ns}@{d} no longer exists locally")

        head = self.client.head_manifest(self.remote, reference)
        if head.status_code == 200 and head.headers.get("Docker-Content-Digest") == str(d):
            return Outcome(CONVERGED)
        if head.status_code not in (200, 404, *UNREADABLE):
            raise failure(head)

        self._ensure_content(rev, depth=0)
        resp = self.client.put_manifest(self.remote, reference, rev.body, rev.media_type, source_ts, origin)
        if resp.status_code in (200, 201, 202):
            self._sent(len(rev.body))
            if rev.subject and "OCI-Subject" not in resp.headers:
                self.on_referrer(rev.subject)
            return Outcome(PUSHED)
        if resp.status_code == 409 and _error_code(resp) == "REPLICATION_SUPERSEDED":
            return Outcome(SUPERSEDED, winner=_winner(resp), sent=Sent(reference, str(d), source_ts, origin))
        raise failure(resp)

    def _ensure_content(self, rev, depth: int) -> None:
        if depth > 8:
            raise ReplicationFailed(f"index nesting deeper than 8 under {self.ns}@{rev.digest}", retryable=False)
        parsed = parse_manifest(rev.body, rev.media_type)
        for child in parsed.children:
            self._ensure_child(child.digest, depth)
        blobs = []
        seen = set()
        for desc in parsed.blobs:
            if desc.digest in seen:
                continue
            seen.add(desc.digest)
            if self.registry.blobs.has_grant(self.ns, desc.digest):
                blobs.append(desc.digest)
            else:
                # A reference the local namespace never received (allowed by
                # allow_missing_manifest_references): nothing to send.
                log.debug("skipping blob %s not present in %s", desc.digest, self.ns)
        if not blobs:
            return
        workers = min(self.ds.max_concurrent_pushes, len(blobs))
        if workers == 1:
            for b in blobs:
                self._ensure_blob(b)
            return
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="angos-blob") as pool:
            for future in [pool.submit(self._ensure_blob, b) for b in blobs]:
                future.result()

    def _ensure_child(self, d: Digest, depth: int) -> None:
        child = self.registry.manifests.revision(self.ns, d)
        if child is None:
            log.debug("skipping child manifest %s not present in %s", d, self.ns)
            return
        head = self.client.head_manifest(self.remote, str(d))
        if head.status_code == 200:
            return
        if head.status_code not in (404, *UNREADABLE):
            raise failure(head)
        self._put_by_digest(child, depth + 1)

    def _put_by_digest(self, rev, depth: int) -> None:
        self._ensure_content(rev, depth)
        resp = self.client.put_manifest(self.remote, str(rev.digest), rev.body, rev.media_type, None)
        if resp.status_code not in (200, 201, 202):
            raise failure(resp)
        self._sent(len(rev.body))
        if rev.subject and "OCI-Subject" not in resp.headers:
            self.on_referrer(rev.subject)

    def _ensure_blob(self, d: Digest) -> None:
        digest = str(d)
        if self.client.head_blob(self.remote, digest):
            return
        location = None
        for source in self._mount_sources(d):
            mounted, location = self.client.mount_or_start(self.remote, digest, source)
            if mounted:
                return
            break  # the refused mount already opened a session: upload into it
        if location is None:
            _, location = self.client.mount_or_start(self.remote, digest, None)
        handle = self.registry.blobs.stat(self.ns, d)
        resp = self.client.upload_blob(self.remote, location, digest, handle.size,
                                       lambda: self.registry.blobs.open(self.ns, d))
        if resp.status_code not in (200, 201, 202):
            raise failure(resp)
        self._sent(handle.size)

    def _mount_sources(self, d: Digest) -> list[str]:
        """Remote namespaces this downstream already received ``d`` in (siblings in the same repository)."""
        out = []
        for ns in self.registry.blobs.namespaces_holding(d):
            if ns == self.ns or not (ns == self.repo_key or ns.startswith(self.repo_key + "/")):
                continue
            remote = remote_namespace(self.repo_key, ns, self.ds.url).namespace
            if remote != self.remote:
                out.append(remote)
        return sorted(out)[:1]

    # ------------------------------------------------------------------ delete

    def _delete(self, reference: str, changed_at: str, subject: str | None, origin: str | None = None) -> Outcome:
        resp = self.client.delete_manifest(self.remote, reference, changed_at, origin)
        code = _error_code(resp)
        if resp.status_code in (200, 202, 204):
            outcome = Outcome(PUSHED, "deleted")
        elif resp.status_code == 404:
            outcome = Outcome(CONVERGED, "already absent")
        elif resp.status_code == 405 or (resp.status_code == 400 and code == "UNSUPPORTED") or (
                # Distribution 2.8 answers a tag delete with 400 DIGEST_INVALID: it only
                # deletes by digest, so for a tag reference that means "unsupported".
                resp.status_code == 400 and code == "DIGEST_INVALID" and ":" not in reference):
            outcome = Outcome(UNSUPPORTED, _describe(resp))
        elif resp.status_code == 409 and code == "REPLICATION_SUPERSEDED":
            return Outcome(SUPERSEDED, winner=_winner(resp), sent=Sent(reference, None, changed_at, origin))
        else:
            raise failure(resp)
        # A deleted referrer leaves its subject's fallback index (where the downstream keeps one).
        if subject and is_digest(reference) and outcome.result == PUSHED:
            self.on_referrer(subject)
        return outcome

    # ------------------------------------------------------------------ referrers fallback

    def rebuild_fallback(self, subject: str) -> Outcome:
        """Write ``subject``'s fallback index on the downstream from the local referrers."""
        try:
            return self._rebuild_fallback(Digest.parse(subject))
        except ClientError as exc:
            raise DownstreamUnavailable(str(exc)) from exc

    def expected_fallback(self, subject: Digest) -> list[dict]:
        """The descriptors the fallback index of ``subject`` should list: every local referrer."""
        out = []
        for desc in self.registry.referrers.list(self.ns, subject):
            if self.registry.manifests.has_revision(self.ns, Digest.parse(desc["digest"])):
                out.append(desc)
        return out

    def remote_fallback(self, subject: Digest) -> list[dict] | None:
        """The downstream's fallback index entries for ``subject`` ([] when it has none), or None when
        the downstream serves the referrers API (it keeps no fallback tag)."""
        probe = self.client.referrers(self.remote, str(subject))
        if probe.status_code == 200:
            return None
        if probe.status_code != 404:
            raise failure(probe)
        resp = self.client.get_manifest(self.remote, referrers_tag(subject))
        if resp.status_code == 404:
            return []
        if resp.status_code != 200:
            raise failure(resp)
        try:
            doc = resp.json()
            entries = doc.get("manifests") if isinstance(doc, dict) else None
        except (ValueError, RecursionError):
            entries = None
        return [e for e in entries if isinstance(e, dict)] if isinstance(entries, list) else []

    def _rebuild_fallback(self, subject: Digest) -> Outcome:
        current = self.remote_fallback(subject)
        if current is None:
            return Outcome(NOOP, "the downstream serves the referrers API")
        wanted = self.expected_fallback(subject)
        for desc in wanted:  # every listed referrer must exist there first
            d = desc["digest"]
            head = self.client.head_manifest(self.remote, d)
            if head.status_code == 404:
                rev = self.registry.manifests.revision(self.ns, Digest.parse(d))
                if rev is not None:
                    self._ensure_content(rev, 1)
                    resp = self.client.put_manifest(self.remote, d, rev.body, rev.media_type, None)
                    if resp.status_code not in (200, 201, 202):
                        raise failure(resp)
                    self._sent(len(rev.body))
            elif head.status_code != 200:
                raise failure(head)
        if current == wanted:
            return Outcome(CONVERGED)
        tag = referrers_tag(subject)
        if not wanted:
            resp = self.client.delete_manifest(self.remote, tag, None)
            if resp.status_code in (200, 202, 404):
                return Outcome(PUSHED)
            # A registry that refuses tag deletes gets an empty index instead.
        body = json.dumps({"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": wanted},
                          separators=(",", ":")).encode()
        resp = self.client.put_manifest(self.remote, tag, body, mt.OCI_INDEX, None)
        if resp.status_code not in (200, 201, 202):
            raise failure(resp)
        self._sent(len(body))
        return Outcome(PUSHED)
