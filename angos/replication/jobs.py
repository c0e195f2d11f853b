"""Replication job envelopes: identifiers only, never content.

Coalescing keys (SPEC 8.5): a push is keyed by (operation, downstream,
namespace, tag-or-digest), so any number of pushes to one tag collapse into
one pending job that re-reads the current state when it runs. A delete adds
its change timestamp to the key, so a newer delete never folds into an older
pending one.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

KIND_PUSH = "replication.push"
KIND_DELETE = "replication.delete"


@dataclass(frozen=True)
class PushJob:
    repository: str
    downstream: str
    namespace: str
    reference: str

    kind = KIND_PUSH

    @property
    def lock_key(self) -> str:
        return f"push|{self.downstream}|{self.namespace}|{self.reference}"

    def payload(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class DeleteJob:
    repository: str
    downstream: str
    namespace: str
    reference: str
    changed_at: str
    subject: str | None = None

    kind = KIND_DELETE

    @property
    def lock_key(self) -> str:
        return f"delete|{self.downstream}|{self.namespace}|{self.reference}|{self.changed_at}"

    def payload(self) -> dict:
        return asdict(self)


def job_from_payload(kind: str, payload: dict):
    if kind == KIND_PUSH:
        return PushJob(**payload)
    if kind == KIND_DELETE:
        return DeleteJob(**payload)
    raise ValueError(f"not a replication job kind: {kind!r}")
