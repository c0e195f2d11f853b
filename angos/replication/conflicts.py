"""The conflict log: every write that last-writer-wins dropped, and the losers it keeps.

A conflict is recorded by each instance that sees a write lose:

- the **sender** (side ``"sender"``): a replication job's write was refused by
  the downstream as superseded (:meth:`ConflictLog.record_superseded`, called by
  the replication handler); ``peer`` is the downstream's configured name, the
  winner is what the downstream's ``409`` named, the loser the local state the
  job sent;
- the **receiver** (side ``"receiver"``): this instance refused a replicated
  write (:class:`ConflictListener`, on the registry's
  :class:`~angos.registry.events.ReplicatedWriteRefused` event); ``peer`` is
  the refused write's origin instance (``"unknown"`` when it named none), the
  winner the local state.

A replicated write that is *newer* than the local tag replaces it like any
later write and is not a conflict. Each record is::

    {"id", "side", "peer", "namespace", "tag", "recorded_at",
     "winner": {"digest", "author_time", "origin"},
     "loser": {"digest", "author_time", "origin", "stored"}}

``digest`` is null for a delete; ``origin`` is the instance the write was
authored on (null when unknown); ``stored`` says whether the loser's manifest
is on this instance (a refused replicated push normally stores nothing on the
receiver: the sender keeps the loser). Every record is also one INFO line on
``angos.replication.conflicts`` and one increment of
``angos_replication_conflicts_total{downstream,side}`` (``downstream`` is the
record's ``peer``).

Storage: one small object per record on the metadata store,
``_replication/conflicts/<inverted microseconds>-<12 hex>`` (the key is
:func:`angos.registry.paths.conflict`; its name is the record's ``id``), so a
plain sorted listing is newest first and paging needs no index. A record's time
is its name's; :meth:`ConflictLog.page` pages by ``id``. A page lists every
name (conflicts are rare and trimmed, so the log stays small) and reads only
the records it returns.

Loser protection: for ``[global.replication] conflict_protection`` after it was
recorded (7 days by default), a loser's manifest is kept by ``angos scrub
--retention`` (:meth:`ConflictLog.protected_losers`), and with it its blobs,
which its reference markers keep from ``--orphan-grants`` and ``--blobs``.
``angos scrub --tombstones`` removes records older than the longer of
``conflict_protection`` and ``tombstone_horizon`` (:meth:`ConflictLog.trim`).
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from datetime import datetime, timedelta, timezone
from typing import Callable, Iterator

from ..registry import paths
from ..registry.events import ReplicatedWriteRefused
from ..registry.timestamps import format_ts, now
from ..storage import NotFound

log = logging.getLogger("angos.replication.conflicts")

SENDER, RECEIVER = "sender", "receiver"
UNKNOWN_PEER = "unknown"
MAX_PAGE = 1000
DEFAULT_PAGE = 100

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_INVERT = 10 ** 17 - 1  # the largest 17-digit number; microseconds since the epoch reach it in 5138
ID = re.compile(r"\d{17}-[0-9a-f]{12}")


def record_id(at: datetime, suffix: str | None = None) -> str:
    """The name of a record made at ``at``: earlier times sort later, so listings are newest first."""
    micros = (at - _EPOCH) // timedelta(microseconds=1)
    return f"{_INVERT - micros:017d}-{suffix or uuid.uuid4().hex[:12]}"


def record_time(rid: str) -> datetime:
    return _EPOCH + timedelta(microseconds=_INVERT - int(rid[:17]))


def _side(digest: str | None, author_time: str | None, origin: str | None) -> dict:
    return {"digest": digest, "author_time": author_time, "origin": origin}


def _count(peer: str, side: str) -> None:
    # Imported here: angos.metrics must not load before the server sets PROMETHEUS_MULTIPROC_DIR.
    from .. import metrics

    metrics.REPLICATION_CONFLICTS.labels(peer, side).inc()


class ConflictLog:
    def __init__(self, meta, protection: Callable[[], float] | None = None,
                 stored: Callable[[str, str], bool] | None = None):
        """``meta`` is the metadata store; ``protection()`` the current ``conflict_protection`` (seconds),
        only quoted in log lines; ``stored(namespace, digest)`` whether that manifest is stored here."""
        self.meta = meta
        self.protection = protection or (lambda: 7 * 86400.0)
        self.stored = stored or (lambda namespace, digest: False)

    # ------------------------------------------------------------------ writing

    def add(self, side: str, peer: str, namespace: str, tag: str, winner: dict, loser: dict,
            at: datetime | None = None) -> dict:
        """Store one record (``winner``/``loser`` as :func:`_side`, the loser with ``stored``), log it and
        count it; returns it."""
        at = at or now()
        rid = record_id(at)
        record = {"id": rid, "side": side, "peer": peer, "namespace": namespace, "tag": tag,
                  "recorded_at": format_ts(at), "winner": winner, "loser": loser}
        self.meta.put(paths.conflict(rid), json.dumps(record, separators=(",", ":")).encode())
        _count(peer, side)
        days = self.protection() / 86400
        log.info("replication conflict on %s:%s (%s, peer %s): %s (%s, from %s) won over %s (%s, from %s); %s",
                 namespace, tag, side, peer, _what(winner), winner["author_time"], winner["origin"] or "?",
                 _what(loser), loser["author_time"], loser["origin"] or "?",
                 f"retention keeps the loser here for {days:g} days" if loser.get("stored") and days > 0
                 else "the loser is stored here" if loser.get("stored") else "the loser is not stored here")
        return record

    def record_superseded(self, downstream: str, namespace: str, outcome) -> dict | None:
        """The sender side: ``outcome`` (a pipeline ``Outcome``, superseded) says what the downstream
        holds (``winner``) and what this job sent (``sent``). Never raises: the job has converged
        whether or not its conflict could be recorded."""
        sent, won = outcome.sent, outcome.winner
        if sent is None:
            return None
        try:
            winner = _side(won.digest, won.author_time, won.origin) if won is not None else _side(None, None, None)
            tag = (won.tag if won is not None and won.tag else None) or sent.reference
            stored = sent.digest is not None and self.stored(namespace, sent.digest)
            return self.add(SENDER, downstream, namespace, tag, winner,
                            {**_side(sent.digest, sent.author_time, sent.origin), "stored": stored})
        except Exception:  # noqa: BLE001 - a record, not part of convergence
            log.exception("cannot record the replication conflict on %s:%s for %s", namespace, sent.reference,
                          downstream)
            return None

    # ------------------------------------------------------------------ reading

    def _ids(self) -> list[str]:
        return [name for name in self.meta.children(paths.CONFLICTS) if ID.fullmatch(name)]

    def read(self, rid: str) -> dict | None:
        try:
            doc = json.loads(self.meta.get(paths.conflict(rid)))
        except NotFound:
            return None  # trimmed since it was listed
        except ValueError:
            log.warning("conflict record %s is unreadable; skipped", rid)
            return None
        return doc if isinstance(doc, dict) else None

    def page(self, n: int = DEFAULT_PAGE, last: str | None = None) -> tuple[list[dict], str | None]:
        """Up to ``n`` records newest first, after the record ``last`` (an ``id``); and the ``id`` to pass
        as ``last`` for the next page, or None when this is the last one."""
        ids = self._ids()
        if last is not None:
            ids = [rid for rid in ids if rid > last]
        out, used = [], 0
        for rid in ids:
            if len(out) >= n:
                break
            used += 1
            doc = self.read(rid)
            if doc is not None:
                out.append(doc)
        more = used < len(ids)
        return out, (ids[used - 1] if more and used else None)

    def newer_than(self, cutoff: datetime) -> Iterator[dict]:
        """Every record made after ``cutoff``, newest first (the listing stops at the first older one)."""
        for rid in self._ids():
            if record_time(rid) <= cutoff:
                return
            doc = self.read(rid)
            if doc is not None:
                yield doc

    def protected_losers(self, window_secs: float, at: datetime | None = None) -> set[tuple[str, str]]:
        """``(namespace, digest)`` of every loser recorded less than ``window_secs`` before ``at``."""
        if window_secs <= 0:
            return set()
        cutoff = (at or now()) - timedelta(seconds=window_secs)
        out = set()
        for doc in self.newer_than(cutoff):
            loser = doc.get("loser") if isinstance(doc.get("loser"), dict) else {}
            if isinstance(loser.get("digest"), str) and isinstance(doc.get("namespace"), str):
                out.add((doc["namespace"], loser["digest"]))
        return out

    def expired(self, cutoff: datetime) -> list[str]:
        """Ids of the records made at or before ``cutoff``, oldest first."""
        out = []
        for rid in reversed(self._ids()):
            if record_time(rid) > cutoff:
                break
            out.append(rid)
        return out

    def trim(self, rid: str) -> None:
        self.meta.delete(paths.conflict(rid))


def _what(side: dict) -> str:
    return side["digest"] or "a delete"


class ConflictListener:
    """The receiver side: a registry listener that records each refused replicated write."""

    def __init__(self, conflicts: ConflictLog):
        self.conflicts = conflicts

    def __call__(self, event) -> None:
        if isinstance(event, ReplicatedWriteRefused):
            self.conflicts.add(
                RECEIVER, event.loser_origin or UNKNOWN_PEER, event.namespace, event.tag,
                _side(event.winner_digest, event.winner_author_time, event.winner_origin),
                {**_side(event.loser_digest, event.loser_author_time, event.loser_origin),
                 "stored": event.loser_stored})


def build_conflict_log(registry, config: Callable) -> ConflictLog:
    """The log on ``registry``'s metadata store, quoting ``config()``'s current protection window."""
    from ..oci.digest import Digest

    return ConflictLog(registry.meta_store, lambda: config().global_.replication.conflict_protection,
                       lambda ns, digest: registry.manifests.has_revision(ns, Digest.parse(digest)))
