"""Replication status: has tag X of namespace N reached downstream D yet, and if not, why not.

Two kinds of record live on the metadata store (fs or S3; keys from
:mod:`angos.registry.paths`):

- **one per (namespace, downstream, tag)**, written by the replication job
  handler when a job for that tag settles (:class:`StatusRecorder`). It is
  *about* one local state of the tag (a digest, or a delete, with its author
  time) and says what became of it there::

      {"state": "in_sync" | "superseded" | "unsupported" | "failed" | "down",
       "digest": <local digest, null for a delete>, "deleted": bool, "author_time": <RFC 3339>,
       "remote_digest", "remote_deleted", "remote_author_time",   # what the downstream holds
       "since", "updated_at", "attempts", "max_attempts", "final", "error"}

  A record is rewritten only when it would change (its state, what it is
  about, what the downstream holds, or a failure's attempt and error), so a
  run that finds 100,000 tags converged writes nothing. A ``down`` never
  replaces an ``in_sync`` about the same state: the downstream being away
  does not take the tag away from it.

- **one per downstream name** (``up``, ``since``, ``last_success``,
  ``last_error``, ``last_error_at``), written on circuit-breaker transitions
  and, at most every :data:`DOWNSTREAM_WRITE_SECS` per process, on successes
  and failures (:class:`DownstreamRecords`).

**Pending is derived, never written.** Reading a tag's status compares its
record with the tag's *current* local state (:func:`downstream_view`): a
record about an older state means ``pending`` since the current state's
author time, so a new push is pending from the moment it is stored, with no
extra write on the push path; the attempts and last error of a failure carry
over when the record is about the same digest. A pending tag of a downstream
whose record says it is down shows ``down`` since then.

Only tags have a status: jobs for a reference by digest (index children,
referrers) and referrers fallback rebuilds record nothing.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable

from ..oci.errors import ManifestUnknown, NameUnknown, Unsupported
from ..oci.digest import is_digest
from ..registry import paths
from ..registry.tags import TagRecord
from ..registry.timestamps import format_ts, now
from ..registry.tombstones import Tombstone
from ..storage import NotFound
from .listener import applicable_downstreams
from .pipeline import CONVERGED, PUSHED
from .pipeline import SUPERSEDED as SUPERSEDED_RESULT
from .pipeline import UNSUPPORTED as UNSUPPORTED_RESULT

log = logging.getLogger("angos.replication.status")

IN_SYNC, PENDING, DOWN, FAILED, SUPERSEDED, UNSUPPORTED = (
    "in_sync", "pending", "down", "failed", "superseded", "unsupported")
STATES = (IN_SYNC, PENDING, DOWN, FAILED, SUPERSEDED, UNSUPPORTED)
DOWNSTREAM_WRITE_SECS = 10.0
ERROR_CHARS = 500       # a stored error is cut to this: records stay small whatever a downstream answers
_VOLATILE = ("since", "updated_at")


def _stamp(ts: float | None = None) -> str:
    """RFC 3339 UTC with microseconds (like author times): now, or Unix time ``ts``."""
    return format_ts(now() if ts is None else datetime.fromtimestamp(ts, timezone.utc))


@dataclass(frozen=True)
class LocalState:
    """What the tag is here: ``digest`` (None for a delete) written at ``author_time``."""
    digest: str | None
    author_time: str

    @property
    def deleted(self) -> bool:
        return self.digest is None


def local_state(registry, ns: str, tag: str) -> LocalState | None:
    """The tag's current local state, or None (never written, or forgotten past the horizon)."""
    state = registry.manifests.tag_state(ns, tag)
    if isinstance(state, TagRecord):
        return LocalState(state.digest, state.created_at)
    if isinstance(state, Tombstone):
        return LocalState(None, state.deleted_at)
    return None


def _about(record: dict) -> LocalState | None:
    at = record.get("author_time")
    return LocalState(record.get("digest"), at) if isinstance(at, str) else None


def _read(meta, key: str) -> dict | None:
    try:
        doc = json.loads(meta.get(key))
    except NotFound:
        return None
    except ValueError:
        return None  # unreadable: as if never written; the next settle rewrites it
    return doc if isinstance(doc, dict) else None


class TagStatusStore:
    """The per-tag records. ``publish(ns, tag)`` is called after each write (waiters' wake-up)."""

    def __init__(self, meta, publish: Callable[[str, str], None] | None = None):
        self.meta = meta
        self.publish = publish or (lambda ns, tag: None)

    def get(self, ns: str, downstream: str, tag: str) -> dict | None:
        return _read(self.meta, paths.replication_status(ns, downstream, tag))

    def settle(self, ns: str, downstream: str, tag: str, about: LocalState, state: str, *,
               remote_digest: str | None = None, remote_deleted: bool = False, remote_author_time: str | None = None,
               attempts: int = 0, max_attempts: int | None = None, final: bool = False, error: str | None = None,
               since: str | None = None) -> bool:
        """Record what became of ``about`` on ``downstream``; returns whether anything was written."""
        old = self.get(ns, downstream, tag)
        same_about = old is not None and _about(old) == about
        if state == DOWN and same_about and old.get("state") in (IN_SYNC, DOWN):
            return False
        new = {"state": state, "digest": about.digest, "deleted": about.deleted, "author_time": about.author_time,
               "remote_digest": remote_digest, "remote_deleted": remote_deleted,
               "remote_author_time": remote_author_time, "attempts": attempts, "max_attempts": max_attempts,
               "final": final, "error": error[:ERROR_CHARS] if error else None}
        if old is not None and {k: v for k, v in old.items() if k not in _VOLATILE} == new:
            return False
        stamp = _stamp()
        new["since"] = old["since"] if same_about and old.get("state") == state and old.get("since") else (
            since or stamp)
        new["updated_at"] = stamp
        self.meta.put(paths.replication_status(ns, downstream, tag), json.dumps(new, separators=(",", ":")).encode())
        try:
            self.publish(ns, tag)
        except Exception:  # noqa: BLE001 - a lost wake-up only delays a waiter to its next re-check
            log.debug("status wake-up for %s:%s not sent", ns, tag, exc_info=True)
        return True


class DownstreamRecords:
    """The per-downstream records: up or down since when, last success, last error.

    Transitions are written at once; successes and failures at most every
    :data:`DOWNSTREAM_WRITE_SECS` per process and name (a busy downstream
    would otherwise rewrite its record on every job). Each process has its own
    breaker, and the record is read, changed and written without a lock: the
    last process to see a change has the last word, which is good enough for
    a record that only informs. Records are per name, like the metrics' label:
    two repositories naming different URLs the same share one."""

    def __init__(self, meta):
        self.meta = meta
        self._lock = threading.Lock()
        self._written: dict[tuple[str, str], float] = {}
        self._up: dict[str, bool] = {}

    def get(self, name: str) -> dict | None:
        return _read(self.meta, paths.replication_downstream(name))

    def _update(self, name: str, **changes) -> None:
        doc = self.get(name) or {"name": name}
        doc.update(changes)
        self.meta.put(paths.replication_downstream(name), json.dumps(doc, separators=(",", ":")).encode())

    def down(self, name: str, since: float, reason: str) -> None:
        with self._lock:
            self._up[name] = False
        self._update(name, up=False, since=_stamp(since), last_error=reason[:ERROR_CHARS], last_error_at=_stamp())

    def up(self, name: str) -> None:
        with self._lock:
            self._up[name] = True
            self._written[(name, "success")] = time.monotonic()
        stamp = _stamp()
        self._update(name, up=True, since=stamp, last_success=stamp)

    def _due(self, key: tuple[str, str], force: bool = False) -> bool:
        with self._lock:
            at = self._written.get(key)
            if not force and at is not None and time.monotonic() - at < DOWNSTREAM_WRITE_SECS:
                return False
            self._written[key] = time.monotonic()
            return True

    def success(self, name: str) -> None:
        with self._lock:
            known_up = self._up.get(name) is True
        if not self._due((name, "success"), force=not known_up):
            return
        doc = self.get(name) or {}
        stamp = _stamp()
        changes = {"last_success": stamp}
        if doc.get("up") is not True:
            changes.update(up=True, since=stamp)
        with self._lock:
            self._up[name] = True
        self._update(name, **changes)

    def failure(self, name: str, error: str) -> None:
        """A rejection: the downstream answered, so a downstream never recorded before is up."""
        if not self._due((name, "failure")):
            return
        stamp = _stamp()
        changes = {"last_error": error[:ERROR_CHARS], "last_error_at": stamp}
        if (self.get(name) or {}).get("up") is None:
            changes.update(up=True, since=stamp)
        self._update(name, **changes)


def forget_tag(meta, ns: str, tag: str) -> None:
    """Remove every downstream's record of ``tag`` (its tombstone is being forgotten: the tag no longer
    exists here in any form, so nothing will ever read them)."""
    root = paths.replication_status_root(ns)
    for entry in meta.children(root):
        meta.delete(paths.replication_status_entry(ns, entry, tag))


# ------------------------------------------------------------------ what the job handler calls


def job_tag(job) -> str | None:
    """The tag a replication job is about, or None (a reference by digest, a referrers rebuild)."""
    reference = getattr(job, "reference", None)
    return None if reference is None or is_digest(reference) else reference


class StatusRecorder:
    """The job handler's side: read what a job is about before it runs, record how it settled.

    Every method swallows its own errors (logged): a status record that cannot be written
    must never fail or retry the replication it describes."""

    def __init__(self, registry, publish: Callable[[str, str], None] | None = None):
        self.registry = registry
        self.tags = TagStatusStore(registry.meta_store, publish)
        self.downstreams = DownstreamRecords(registry.meta_store)

    def _guard(self, what: str, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception:  # noqa: BLE001 - see the class docstring
            log.warning("replication status: could not record %s", what, exc_info=True)
            return None

    def about(self, job) -> LocalState | None:
        """The local state a job is about to send (read *before* it runs: a newer write landing
        meanwhile then reads as pending, never as already there)."""
        tag = job_tag(job)
        if tag is None:
            return None
        return self._guard(f"{job.namespace}:{tag}", local_state, self.registry, job.namespace, tag)

    def settled(self, job, about: LocalState | None, result: str, detail: str = "", winner=None) -> None:
        """A job ended with pipeline ``result`` (``winner``: what a superseding downstream holds)."""
        tag = job_tag(job)
        if result in (PUSHED, CONVERGED, SUPERSEDED_RESULT):
            self._guard(f"success of {job.downstream}", self.downstreams.success, job.downstream)
        if tag is None or about is None:
            return
        if result in (PUSHED, CONVERGED):
            fields = {"remote_digest": about.digest, "remote_deleted": about.deleted}
            self._guard(f"{job.namespace}:{tag}", self.tags.settle, job.namespace, job.downstream, tag, about,
                        IN_SYNC, **fields)
        elif result == SUPERSEDED_RESULT:
            fields = {}
            if winner is not None:
                fields = {"remote_digest": winner.digest, "remote_deleted": winner.digest is None,
                          "remote_author_time": winner.author_time}
            self._guard(f"{job.namespace}:{tag}", self.tags.settle, job.namespace, job.downstream, tag, about,
                        SUPERSEDED, **fields)
        elif result == UNSUPPORTED_RESULT:
            self._guard(f"{job.namespace}:{tag}", self.tags.settle, job.namespace, job.downstream, tag, about,
                        UNSUPPORTED, error=detail or None)

    def failed(self, job, about: LocalState | None, error: str, attempt: int, max_attempts: int | None,
               final: bool) -> None:
        self._guard(f"failure of {job.downstream}", self.downstreams.failure, job.downstream, error)
        tag = job_tag(job)
        if tag is not None and about is not None:
            self._guard(f"{job.namespace}:{tag}", self.tags.settle, job.namespace, job.downstream, tag, about,
                        FAILED, attempts=attempt, max_attempts=max_attempts, final=final, error=error)

    def downstream_down(self, name: str, since: float, reason: str) -> None:
        self._guard(f"{name} down", self.downstreams.down, name, since, reason)

    def downstream_up(self, name: str) -> None:
        self._guard(f"{name} up", self.downstreams.up, name)

    def down(self, job, about: LocalState | None, since: float | None, reason: str) -> None:
        tag = job_tag(job)
        if tag is None:
            return
        if about is None:
            about = self.about(job)
        if about is not None:
            self._guard(f"{job.namespace}:{tag}", self.tags.settle, job.namespace, job.downstream, tag, about,
                        DOWN, error=reason, since=_stamp(since) if since else None)


# ------------------------------------------------------------------ what readers see


def downstream_names(cfg, ns: str, only: str | None = None) -> list[str]:
    """The downstreams ``ns`` replicates to (any mode, filter matching, self-loops left out), or just
    ``only`` (UNSUPPORTED when it is not one of them)."""
    names = list(dict.fromkeys(ds.name for _, ds, _ in applicable_downstreams(cfg, ns, "any")))
    if only is None:
        return names
    if only not in names:
        raise Unsupported(f"no downstream named {only!r} replicates namespace {ns}")
    return [only]


def downstream_view(name: str, record: dict | None, local: LocalState, downstream: dict | None = None) -> dict:
    """One downstream's status of one tag, derived from its record and the tag's current state."""
    view = {"downstream": name, "state": PENDING, "since": local.author_time, "remote_digest": None,
            "remote_deleted": False, "remote_author_time": None, "attempts": 0, "max_attempts": None,
            "final": False, "error": None, "updated_at": None}
    if record is not None and _about(record) == local and record.get("state") in STATES:
        for key in view:
            if key != "downstream" and record.get(key) is not None:
                view[key] = record[key]
        return view
    if record is not None and record.get("state") == FAILED and record.get("digest") == local.digest:
        view.update(attempts=record.get("attempts") or 0, max_attempts=record.get("max_attempts"),
                    error=record.get("error"), updated_at=record.get("updated_at"))
    if downstream is not None and downstream.get("up") is False:
        view.update(state=DOWN, since=downstream.get("since") or local.author_time,
                    error=view["error"] or downstream.get("last_error"))
    return view


def in_sync(views) -> bool:
    return all(v["state"] == IN_SYNC for v in views)


def settled_for_good(view: dict) -> bool:
    """Whether only an operator can change this view: ``in_sync``, ``unsupported`` (no retry
    changes it), or ``failed`` with its last attempt used (dead-lettered)."""
    return view["state"] in (IN_SYNC, UNSUPPORTED) or (view["state"] == FAILED and bool(view.get("final")))


def may_change(views) -> bool:
    """Whether waiting can still change something (a view not :func:`settled_for_good`)."""
    return not all(settled_for_good(v) for v in views)


class StatusReader:
    """Read-side views for the API and the UI; one per request is fine (downstream records are
    read once per view)."""

    def __init__(self, registry):
        self.registry = registry
        self.tags = TagStatusStore(registry.meta_store)
        self.downstreams = DownstreamRecords(registry.meta_store)
        self._ds_cache: dict[str, dict | None] = {}

    def _downstream(self, name: str) -> dict | None:
        if name not in self._ds_cache:
            self._ds_cache[name] = self.downstreams.get(name)
        return self._ds_cache[name]

    def tag_names(self, ns: str) -> list[str]:
        """Every tag and tombstone of ``ns``; NAME_UNKNOWN when the namespace holds nothing at all."""
        manifests = self.registry.manifests
        names = set(manifests.tags.names(ns)) | set(manifests.tombstones.tag_names(ns))
        if not names and not manifests.namespace_exists(ns):
            raise NameUnknown(f"repository {ns} unknown")
        return sorted(names)

    def tag(self, ns: str, tag: str, names: list[str]) -> dict:
        """``{name, tag, digest, deleted, author_time, in_sync, downstreams: [view...]}`` for ``names``;
        MANIFEST_UNKNOWN for a tag this instance never had (or has forgotten)."""
        self._ds_cache.clear()  # every call reads afresh: a waiter calls again after each wake-up
        return self._tag(ns, tag, names, strict=True)

    def tags_of(self, ns: str, tags: list[str], names: list[str]) -> list[dict]:
        """The same for each of ``tags``, leaving out any that went away meanwhile."""
        self._ds_cache.clear()
        return [doc for t in tags if (doc := self._tag(ns, t, names, strict=False)) is not None]

    def _tag(self, ns: str, tag: str, names: list[str], strict: bool) -> dict | None:
        local = local_state(self.registry, ns, tag)
        if local is None:
            if not strict:
                return None
            if not self.registry.manifests.namespace_exists(ns):
                raise NameUnknown(f"repository {ns} unknown")
            raise ManifestUnknown(f"tag {ns}:{tag} unknown")
        views = [downstream_view(name, self.tags.get(ns, name, tag), local, self._downstream(name)) for name in names]
        return {"name": ns, "tag": tag, "digest": local.digest, "deleted": local.deleted,
                "author_time": local.author_time, "in_sync": in_sync(views), "downstreams": views}


def downstream_overview(cfg, meta) -> list[dict]:
    """One dict per configured downstream name, in configuration order, for the UI and the API.

    The UI renders every key as a column in this order, so a field added here shows up there.
    ``state`` is ``up``, ``down`` or ``unknown`` (nothing recorded yet: no job has run for it)."""
    records = DownstreamRecords(meta)
    rows: dict[str, dict] = {}
    for repo_key, repo in cfg.repository.items():
        for ds in repo.downstream:
            row = rows.get(ds.name)
            if row is None:
                row = rows[ds.name] = {"downstream": ds.name, "url": ds.url, "repositories": []}
            row["repositories"].append(repo_key)
    out = []
    for name, row in rows.items():
        rec = records.get(name) or {}
        up = rec.get("up")
        row.update({"state": "unknown" if up is None else ("up" if up else "down"), "since": rec.get("since"),
                    "last_success": rec.get("last_success"), "last_error": rec.get("last_error"),
                    "last_error_at": rec.get("last_error_at")})
        out.append(row)
    return out
