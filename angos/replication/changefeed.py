"""The change feed: an ordered, durable record of this instance's tag changes.

Every tag push and tag delete this instance commits — from a client or
replicated from a peer, including a replicated delete of a tag it did not
have, which leaves a tombstone — is recorded by :class:`ChangeFeedListener`, a
registry event listener wired where the registry's events are (``create_app``
and ``scrub --retention``). ``GET /_ext/_changes`` serves it and ``angos
replicate`` reads it, its own and its peers', to compare only what changed
(:mod:`.reconcile_feed`). By-digest references (untagged manifests) are not
recorded: reconcile compares tags.

Layout on the *metadata* store (keys from :mod:`angos.registry.paths`)::

    _changes/<bucket>/<stamp>-<suffix>    {"namespace", "tag", "op": "push"|"delete",
                                           "digest", "author_time"}
    _changes/_meta                        {"epoch", "trimmed_before"}

- ``stamp`` is 16 digits of microseconds since the epoch, read from the
  recording process's clock when it records (not the author time, which a
  replicated write brings from elsewhere); ``suffix`` is 12 random hex
  digits, so processes and hosts writing at the same microsecond never
  collide. Names sort in recording order as plain strings.
- ``bucket`` is the stamp's first 7 digits (1,000 seconds), so a reader lists
  only the buckets from its cursor on, not the whole feed.
- One small object per change, written after the change is committed. A
  failed write is logged and counted in ``angos_change_feed_write_failures_total``
  and never fails the client's request; reconcile then misses that change
  until ``angos replicate --full`` (or the feed's trim) compares everything.

A **cursor** is an entry's name, or a bare stamp meaning "after everything
recorded before this microsecond". Readers ask for the entries after a
cursor (:meth:`ChangeFeed.read`).

**Ordering guarantee.** Entries are listed in stamp order. A writer takes its
stamp before its object lands, and hosts sharing the store have clocks that
differ a little, so an entry can appear *behind* one a reader has already
passed — by at most the time a write takes plus that skew. Readers cover this
by saving :meth:`ChangeFeed.head` (now minus ``[global.replication]
change_feed_grace``, taken *before* they read) rather than the last entry they
saw, and reading from there next time: every entry that lands later is then
after the saved cursor. Entries inside the grace window are read twice;
reconcile compares current states, so reading one twice changes nothing.

**Trim and epoch.** ``scrub --tombstones`` removes entries older than the
tombstone horizon and records that point as ``trimmed_before`` (first, so a
reader racing the trim is told rather than silently missing entries). A
cursor before it raises :class:`~angos.oci.errors.CursorExpired`. ``epoch``
is a random id made when the feed is first read: a store that was replaced
(a new instance at the same URL) has a different one, and a reader that
remembers the old one knows its cursors mean nothing there.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import time
from dataclasses import dataclass

from ..oci.errors import CursorExpired, Unsupported
from ..registry import paths
from ..registry.events import ManifestDeleted, ManifestPushed, TombstoneRecorded
from ..storage import NotFound

log = logging.getLogger("angos.replication.changefeed")

STAMP_DIGITS = 16
BUCKET_DIGITS = 7
_BUCKET = re.compile(rf"[0-9]{{{BUCKET_DIGITS}}}")   # [0-9], not \d: other scripts' digits sort elsewhere
_ENTRY = re.compile(rf"[0-9]{{{STAMP_DIGITS}}}-[0-9a-f]{{12}}")
_CURSOR = re.compile(rf"[0-9]{{{STAMP_DIGITS}}}(-[0-9a-f]{{12}})?")
ORIGIN = "0" * STAMP_DIGITS


def stamp(unix_secs: float | None = None) -> str:
    """A time-only cursor: ``unix_secs`` (default now) as 16 digits of microseconds."""
    micros = time.time_ns() // 1000 if unix_secs is None else int(unix_secs * 1_000_000)
    return f"{max(micros, 0):0{STAMP_DIGITS}d}"


def stamp_time(cursor: str) -> float:
    """The Unix time a cursor stands for."""
    return int(cursor[:STAMP_DIGITS]) / 1_000_000


def is_cursor(value) -> bool:
    return isinstance(value, str) and _CURSOR.fullmatch(value) is not None


def check_cursor(value: str) -> str:
    """``value`` if it is a cursor; UNSUPPORTED (400) otherwise."""
    if not is_cursor(value):
        raise Unsupported(f"since must be a change-feed cursor (16 digits, optionally -<12 hex>), got {value[:64]!r}")
    return value


@dataclass(frozen=True)
class Change:
    cursor: str
    namespace: str
    tag: str
    op: str                 # "push" or "delete"
    digest: str | None
    author_time: str

    def to_json(self) -> dict:
        return {"cursor": self.cursor, "namespace": self.namespace, "tag": self.tag, "op": self.op,
                "digest": self.digest, "author_time": self.author_time}


@dataclass(frozen=True)
class Page:
    changes: list[Change]
    next: str               # read from here to continue (the last entry looked at, or where reading began)
    more: bool              # True when entries after ``next`` were left for another page
    epoch: str
    trimmed_before: str | None


class ChangeFeed:
    def __init__(self, meta):
        self.meta = meta

    # -- writing

    def record(self, namespace: str, tag: str, op: str, digest: str | None, author_time: str) -> str:
        """Append one change; returns its cursor."""
        name = f"{stamp()}-{secrets.token_hex(6)}"
        body = {"namespace": namespace, "tag": tag, "op": op, "digest": digest, "author_time": author_time}
        self.meta.put(paths.change_entry(name[:BUCKET_DIGITS], name), json.dumps(body, separators=(",", ":")).encode())
        return name

    # -- the feed's identity and trim point

    def state(self, create: bool = True) -> dict:
        """``{"epoch", "trimmed_before"}``, made on first use (``create=False``: epoch None until then)."""
        try:
            return json.loads(self.meta.get(paths.change_meta()))
        except NotFound:
            if not create:
                return {"epoch": None, "trimmed_before": None}
        except ValueError:
            log.error("%s is unreadable: starting a new epoch (readers fall back to full comparisons)",
                      paths.change_meta())
            self.meta.put(paths.change_meta(), json.dumps({"epoch": secrets.token_hex(8),
                                                           "trimmed_before": None}).encode())
        self.meta.put_if_absent(paths.change_meta(), json.dumps({"epoch": secrets.token_hex(8),
                                                                 "trimmed_before": None}).encode())
        return json.loads(self.meta.get(paths.change_meta()))

    @staticmethod
    def head(grace: float) -> str:
        """The cursor a reader saves before reading: every entry that lands from now on is after it."""
        return stamp(time.time() - grace)

    # -- reading

    def _buckets(self) -> list[str]:
        return sorted(b for b in self.meta.children(paths.CHANGES) if _BUCKET.fullmatch(b))

    def _names(self, bucket: str) -> list[str]:
        return sorted(n for n in self.meta.children(paths.change_bucket(bucket)) if _ENTRY.fullmatch(n))

    def _load(self, name: str) -> Change | None:
        try:
            doc = json.loads(self.meta.get(paths.change_entry(name[:BUCKET_DIGITS], name)))
            return Change(name, doc["namespace"], doc["tag"], doc["op"], doc.get("digest"), doc.get("author_time", ""))
        except NotFound:
            return None
        except (ValueError, KeyError, TypeError):
            log.warning("change-feed entry %s is unreadable: skipped", name)
            return None

    def read(self, since: str | None, n: int) -> Page:
        """Up to ``n`` changes after ``since`` (the oldest kept entry when None), in order.
        Raises CursorExpired when ``since`` is older than the trim point."""
        state = self.state()
        trimmed = state.get("trimmed_before")
        if since is not None and trimmed and since < trimmed:
            raise CursorExpired(f"the change feed was trimmed before {trimmed}; cursor {since} is older",
                                detail={"trimmed_before": trimmed})
        start = since if since is not None else (trimmed or ORIGIN)
        out: list[Change] = []
        last, more = None, False
        for bucket in self._buckets():
            if bucket < start[:BUCKET_DIGITS]:
                continue
            for name in self._names(bucket):
                if name <= start:
                    continue
                if len(out) >= n:
                    more = True
                    break
                last = name
                change = self._load(name)
                if change is not None:
                    out.append(change)
            if more:
                break
        if since is not None:
            again = self.state().get("trimmed_before")
            if again and since < again:  # trimmed while we read: what we listed may have gaps
                raise CursorExpired(f"the change feed was trimmed before {again}; cursor {since} is older",
                                    detail={"trimmed_before": again})
        return Page(out, last or start, more, state["epoch"], trimmed)

    # -- trimming (scrub)

    def trim(self, before: str, dry_run: bool = False) -> int:
        """Remove every entry recorded before cursor ``before`` and record it as the trim point
        (first, so readers are told). Returns how many entries went (or would go)."""
        if not dry_run:
            state = self.state()
            if not state.get("trimmed_before") or state["trimmed_before"] < before:
                state["trimmed_before"] = before
                self.meta.put(paths.change_meta(), json.dumps(state).encode())
        removed = 0
        for bucket in self._buckets():
            if bucket > before[:BUCKET_DIGITS]:
                break
            names = self._names(bucket)
            if bucket < before[:BUCKET_DIGITS]:
                removed += len(names)
                if not dry_run:
                    self.meta.delete_prefix(paths.change_bucket(bucket))
                continue
            for name in names:
                if name >= before:
                    break
                removed += 1
                if not dry_run:
                    self.meta.delete(paths.change_entry(bucket, name))
        return removed


class ChangeFeedListener:
    """Registry events → feed entries. Never raises: a failed write is logged and counted."""

    def __init__(self, feed: ChangeFeed):
        self.feed = feed

    def __call__(self, event) -> None:
        if isinstance(event, ManifestPushed):
            op, digest, when = "push", event.digest, event.created_at
        elif isinstance(event, ManifestDeleted):
            op, digest, when = "delete", event.digest, event.deleted_at
        elif isinstance(event, TombstoneRecorded):
            op, digest, when = "delete", None, event.deleted_at
        else:
            return
        if ":" in event.reference:
            return  # a digest reference: not a tag (tags cannot hold ':')
        try:
            self.feed.record(event.namespace, event.reference, op, digest, when)
        except Exception:  # noqa: BLE001 - the write is committed; a lost entry must not fail it
            from .. import metrics

            metrics.CHANGE_FEED_WRITE_FAILURES.inc()
            log.exception("could not record %s of %s:%s in the change feed; reconcile misses it until "
                          "`angos replicate --full`", op, event.namespace, event.reference)


def wire(registry) -> ChangeFeed:
    """Record ``registry``'s tag changes in its metadata store's feed; returns the feed."""
    feed = ChangeFeed(registry.meta_store)
    registry.listeners.add(ChangeFeedListener(feed))
    return feed
