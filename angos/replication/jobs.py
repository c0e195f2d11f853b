"""Replication job envelopes: identifiers only, never content.

One queue key per (downstream, namespace, reference) covers pushes *and*
deletes (:class:`SyncJob`): the job reads the reference's current local state
when it runs (a tag, a tag tombstone, a manifest, a manifest tombstone) and
makes the downstream match it. Any churn on one tag is therefore at most one
pending and one running job, and a push and a delete of one reference can
never run at once or land out of order.

:class:`ReferrersJob` keeps the OCI 1.0 referrers fallback tag of one subject
on one downstream without the referrers API; its own key serialises every
rebuild of that index.

Jobs queued by earlier versions (``replication.push``, ``replication.delete``)
are read as sync jobs of the same reference: they too act on current state.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

KIND_SYNC = "replication.sync"
KIND_REFERRERS = "replication.referrers"
LEGACY_KINDS = ("replication.push", "replication.delete")


@dataclass(frozen=True)
class SyncJob:
    repository: str
    downstream: str
    namespace: str
    reference: str
    # Set by a reconcile of a ``prune = true`` downstream: when the reference is unknown here,
    # delete it there, stamped with this time (a prune has no local tombstone to read).
    prune_at: str | None = None

    kind = KIND_SYNC

    @property
    def lock_key(self) -> str:
        return f"sync|{self.downstream}|{self.namespace}|{self.reference}"

    def payload(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class ReferrersJob:
    repository: str
    downstream: str
    namespace: str
    subject: str

    kind = KIND_REFERRERS

    @property
    def lock_key(self) -> str:
        return f"referrers|{self.downstream}|{self.namespace}|{self.subject}"

    def payload(self) -> dict:
        return asdict(self)


def job_from_payload(kind: str, payload: dict):
    if kind == KIND_SYNC:
        return SyncJob(**payload)
    if kind == KIND_REFERRERS:
        return ReferrersJob(**payload)
    if kind in LEGACY_KINDS:
        return SyncJob(payload["repository"], payload["downstream"], payload["namespace"], payload["reference"])
    raise ValueError(f"not a replication job kind: {kind!r}")
