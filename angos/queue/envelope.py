"""The job envelope: what a queued job is, independent of the storage backend.

An :class:`Envelope` carries identifiers only (``payload`` names what to work
on; the handler re-reads current state when it runs). ``storage_key`` is the
job's stable name in the admin API and in the stores: ``<16 hex digits of the
creation time in unix milliseconds>-<uuid>``, so sorting keys sorts jobs by
creation time, and a cursor (``after``) is just the last key of a page.

Times are unix seconds (float) inside the process and RFC 3339 UTC strings on
the wire and in the admin API.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone

STORAGE_KEY = re.compile(r"^[0-9a-f]{16}-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
QUEUES = ("replication", "cache", "webhooks")


def created_at_of(storage_key: str) -> float:
    """A job's creation time (unix seconds, millisecond precision) read from its storage_key."""
    return int(storage_key[:16], 16) / 1000.0


def rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def backoff_secs(attempts: int, min_ms: int, max_ms: int) -> float:
    """Delay before the run that follows ``attempts`` failed runs: min(min_ms × 2^attempts, max_ms)."""
    return min(min_ms * (2 ** min(attempts, 62)), max_ms) / 1000.0


@dataclass(frozen=True)
class Envelope:
    id: str
    kind: str
    lock_key: str
    payload: dict
    max_attempts: int
    created_at: float
    not_before: float
    attempts: int = 0
    last_error: str | None = None
    failed_at: float | None = None
    extra: dict = field(default_factory=dict)

    @classmethod
    def new(cls, kind: str, lock_key: str, payload: dict, max_attempts: int, delay: float = 0.0) -> "Envelope":
        now = time.time()
        return cls(id=str(uuid.uuid4()), kind=kind, lock_key=lock_key, payload=dict(payload),
                   max_attempts=max_attempts, created_at=now, not_before=now + max(delay, 0.0))

    @property
    def storage_key(self) -> str:
        return f"{int(self.created_at * 1000):016x}-{self.id}"

    def with_(self, **changes) -> "Envelope":
        return replace(self, **changes)

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> "Envelope":
        data = json.loads(text)
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})

    def describe(self, state: str) -> dict:
        """The admin API's view of this job (SPEC 10)."""
        out = {"storage_key": self.storage_key, "id": self.id, "kind": self.kind, "lock_key": self.lock_key,
               "attempts": self.attempts, "max_attempts": self.max_attempts,
               "created_at": rfc3339(self.created_at), "payload": self.payload}
        if state == "failed":
            out["failed_at"] = rfc3339(self.failed_at or self.not_before)
            out["last_error"] = self.last_error
        else:
            out["state"] = state
            out["not_before"] = rfc3339(self.not_before)
            if self.last_error is not None:
                out["last_error"] = self.last_error
        return out
