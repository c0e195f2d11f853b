"""The replication push and delete pipelines (idempotent, at-least-once).

A push re-reads the *current* local state: the tag's digest at run time, not
at enqueue time, so however many enqueues coalesced the newest state wins. A
delete does too: it is skipped when the reference exists locally again.
Order of work, so the downstream never holds a manifest before its content:

1. HEAD the manifest on the downstream: the same digest is ``converged``.
2. Child manifests of an index, recursively, each pushed by digest.
3. Blobs: HEAD each; a missing one is mounted from a sibling namespace the
   downstream already has it in, else streamed; at most
   ``max_concurrent_pushes`` transfers at once.
4. PUT the manifest with ``X-Angos-Source-Timestamp`` (the author time).
   A manifest with a ``subject`` on a downstream without the referrers API
   (no ``OCI-Subject`` in the answer) also updates the fallback tag index.

Results are :class:`Outcome` values; failures raise :class:`ReplicationFailed`
carrying whether a retry can help.
"""

from __future__ import annotations

import json
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from ..oci import media_types as mt
from ..oci.digest import Digest
from ..oci.manifest import parse_manifest
from ..oci.reference import referrers_tag
from .client import ClientError, DownstreamClient
from .mapping import Target, remote_namespace

log = logging.getLogger("angos.replication.pipeline")

PUSHED, CONVERGED, SUPERSEDED, UNSUPPORTED, NOOP = "pushed", "converged", "superseded", "unsupported", "noop"


class ReplicationFailed(Exception):
    def __init__(self, message: str, retryable: bool = True):
        super().__init__(message)
        self.retryable = retryable


@dataclass(frozen=True)
class Outcome:
    result: str
    detail: str = ""


def _error_code(resp) -> str | None:
    try:
        errors = resp.json().get("errors") or []
        return errors[0].get("code") if errors else None
    except (ValueError, AttributeError):
        return None


def _describe(resp) -> str:
    code = _error_code(resp)
    text = code or (resp.text or "")[:200].strip()
    return f"{resp.request.method} {resp.url} answered {resp.status_code}" + (f" {text}" if text else "")


class Pipeline:
    """Replicates one local namespace to one downstream target."""

    def __init__(self, registry, client: DownstreamClient, ds, repo_key: str, namespace: str, target: Target):
        self.registry = registry
        self.client = client
        self.ds = ds
        self.repo_key = repo_key
        self.ns = namespace
        self.target = target
        self.remote = target.namespace

    # ------------------------------------------------------------------ push

    def push(self, reference: str) -> Outcome:
        try:
            return self._push(reference)
        except ClientError as exc:
            raise ReplicationFailed(str(exc)) from exc

    def _push(self, reference: str) -> Outcome:
        manifests = self.registry.manifests
        if ":" in reference:
            d = Digest.parse(reference)
            source_ts = None
        else:
            rec = manifests.tag_record(self.ns, reference)
            if rec is None:
                return Outcome(NOOP, f"tag {self.ns}:{reference} no longer exists locally")
            d = Digest.parse(rec.digest)
            source_ts = rec.created_at
        rev = manifests.revision(self.ns, d)
        if rev is None:
            return Outcome(NOOP, f"manifest {self.ns}@{d} no longer exists locally")

        head = self.client.head_manifest(self.remote, reference)
        if head.status_code == 200 and head.headers.get("Docker-Content-Digest") == str(d):
            return Outcome(CONVERGED)
        if head.status_code in (401, 403):
            raise ReplicationFailed(_describe(head))

        self._ensure_content(rev, depth=0)
        resp = self.client.put_manifest(self.remote, reference, rev.body, rev.media_type, source_ts)
        if resp.status_code in (200, 201, 202):
            if rev.subject and "OCI-Subject" not in resp.headers:
                self._add_to_fallback_tag(rev)
            return Outcome(PUSHED)
        if resp.status_code == 409 and _error_code(resp) == "REPLICATION_SUPERSEDED":
            return Outcome(SUPERSEDED)
        raise ReplicationFailed(_describe(resp))

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
        self._ensure_content(child, depth + 1)
        resp = self.client.put_manifest(self.remote, str(d), child.body, child.media_type, None)
        if resp.status_code not in (200, 201, 202):
            raise ReplicationFailed(_describe(resp))
        if child.subject and "OCI-Subject" not in resp.headers:
            self._add_to_fallback_tag(child)

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
            raise ReplicationFailed(_describe(resp))

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

    # ------------------------------------------------------------------ referrers fallback

    def _referrer_descriptor(self, rev) -> dict:
        parsed = parse_manifest(rev.body, rev.media_type)
        desc = {"mediaType": parsed.media_type, "digest": str(rev.digest), "size": len(rev.body)}
        art = parsed.referrer_artifact_type()
        if art:
            desc["artifactType"] = art
        if parsed.annotations:
            desc["annotations"] = parsed.annotations
        return desc

    def _fallback_index(self, tag: str) -> dict:
        resp = self.client.get_manifest(self.remote, tag)
        if resp.status_code == 200:
            try:
                doc = resp.json()
                if isinstance(doc.get("manifests"), list):
                    return doc
            except ValueError:
                pass
        elif resp.status_code != 404:
            raise ReplicationFailed(_describe(resp))
        return {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": []}

    def _add_to_fallback_tag(self, rev) -> None:
        subject = Digest.parse(rev.subject)
        tag = referrers_tag(subject)
        index = self._fallback_index(tag)
        if any(m.get("digest") == str(rev.digest) for m in index["manifests"]):
            return
        index["manifests"].append(self._referrer_descriptor(rev))
        self._put_fallback(tag, index)

    def _remove_from_fallback_tag(self, subject: str, digest: str) -> None:
        tag = referrers_tag(Digest.parse(subject))
        index = self._fallback_index(tag)
        kept = [m for m in index["manifests"] if m.get("digest") != digest]
        if len(kept) == len(index["manifests"]):
            return
        if not kept:
            resp = self.client.delete_manifest(self.remote, tag, None)
            if resp.status_code in (200, 202, 404):
                return
            # A registry that refuses tag deletes gets an empty index instead.
        index["manifests"] = kept
        self._put_fallback(tag, index)

    def _put_fallback(self, tag: str, index: dict) -> None:
        body = json.dumps(index, separators=(",", ":")).encode()
        resp = self.client.put_manifest(self.remote, tag, body, mt.OCI_INDEX, None)
        if resp.status_code not in (200, 201, 202):
            raise ReplicationFailed(_describe(resp))

    # ------------------------------------------------------------------ delete

    def delete(self, reference: str, changed_at: str | None, subject: str | None = None) -> Outcome:
        try:
            return self._delete(reference, changed_at, subject)
        except ClientError as exc:
            raise ReplicationFailed(str(exc)) from exc

    def _delete(self, reference: str, changed_at: str | None, subject: str | None) -> Outcome:
        # Like a push, a delete acts on the current local state: if the reference exists
        # here again, it was written after the delete, and that write's push (pending or
        # already run) carries the newer state. Deleting now would undo it downstream.
        manifests = self.registry.manifests
        if ":" in reference:
            present = manifests.has_revision(self.ns, Digest.parse(reference))
        else:
            present = manifests.tag_record(self.ns, reference) is not None
        if present:
            return Outcome(NOOP, f"{self.ns}:{reference} was written again after the delete")
        resp = self.client.delete_manifest(self.remote, reference, changed_at)
        code = _error_code(resp)
        if resp.status_code in (200, 202, 204):
            outcome = Outcome(PUSHED)
        elif resp.status_code == 404:
            outcome = Outcome(CONVERGED)
        elif resp.status_code == 405 or (resp.status_code == 400 and code == "UNSUPPORTED") or (
                # Distribution 2.8 answers a tag delete with 400 DIGEST_INVALID: it only
                # deletes by digest, so for a tag reference that means "unsupported".
                resp.status_code == 400 and code == "DIGEST_INVALID" and ":" not in reference):
            outcome = Outcome(UNSUPPORTED, _describe(resp))
        elif resp.status_code == 409 and code == "REPLICATION_SUPERSEDED":
            return Outcome(SUPERSEDED)
        else:
            raise ReplicationFailed(_describe(resp))
        # Only a deleted manifest (by digest) leaves the fallback index; a deleted tag does not.
        if subject and ":" in reference and outcome.result == PUSHED:
            probe = self.client.referrers(self.remote, subject)
            if probe.status_code == 404:
                self._remove_from_fallback_tag(subject, reference)
        return outcome
