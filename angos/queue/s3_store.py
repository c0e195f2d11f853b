"""Job state as objects in the S3 metadata store (in-process drain, no ``[global.job_queue]``).

With an S3 metadata store and no ``[global.job_queue]`` the durable job state
lives in the metadata bucket, under its key prefix, so a box that loses its
disk loses no pending work. Layout (``<q>`` is the queue, ``<sk>`` a job's
storage_key, ``<h>`` the sha256 hex of its lock_key; every body is JSON and
carries the readable lock_key):

==========================================  ====================================================
``_jobs/pending/<q>/<sk>``                  a pending or running job: ``{job, state, owner,
                                            lease_until, claim}`` (state pending | running)
``_jobs/failed/<q>/<sk>``                   a dead-lettered job ``{job, state: failed}``
``_jobs/keys/<q>/<h>.pending``              coalescing marker: the pending job of a lock_key
``_jobs/keys/<q>/<h>.running``              run marker: the one running job of a lock_key
==========================================  ====================================================

Atomicity comes from S3 conditional writes only (several web workers and
several boxes share the bucket): a job object changes state by compare-and-swap
(``If-Match: <etag>``), markers are created with ``If-None-Match: *``. Every
body carries a fresh nonce (``rev``): S3 ETags are content hashes, so writing
back an earlier body must not revive an old ETag. The rules:

- coalescing: ``add`` writes the job, then creates ``.pending``; a marker that
  already names a pending job makes the new job a duplicate (deleted, False).
  A marker whose job is no longer pending (claimed, finished, gone) is stale
  and replaced (deleted with ``If-Match``). A marker naming the caller's own job
  is re-written with ``If-Match`` before it counts, so a sweep that judged it
  stale a moment ago can never delete it afterwards.
- one run per lock_key: ``claim_next`` CASes the job to ``running`` with a
  fresh ``claim`` id, *then* creates ``.running`` naming that claim. The marker
  is valid exactly while its job is running under that claim id, a state that
  never comes back once left, so a stale marker is recognised without clocks
  and deleted (``If-Match``) by whoever meets it. A claim that finds a valid
  marker of another run puts its job back to pending (it waits for that run).
- a job leaves ``running`` only through its owner (complete, reschedule,
  dead-letter) or a reclaim, each a CAS that checks owner and lease, so a
  renewed lease wins against a reclaim that read the old one (as in the other
  stores). Dead-lettering CASes the job to ``failed`` (the commit point), then
  copies it to ``_jobs/failed/`` and deletes it from ``pending/``.
- a write interrupted by a crash leaves a state the others repair: a stale
  marker (replaced when met; swept), a pending job without its marker (still
  claimable; a later duplicate costs at most one extra run, never a lost one),
  a ``failed`` job still under ``pending/`` or a retried job still under
  ``failed/`` (both moved by the periodic sweep in :meth:`top_up`).

Wake-ups stay in Huey's local SQLite (:mod:`.wakeups`, ``$ANGOS_JOBS_DIR/pending/<q>/queue.db``,
shared by every process of the box) and are issued only after the S3 write
that made a job runnable succeeded. They are not durable state: ``top_up``
(every few seconds in each drain) counts the claimable jobs on S3 and adds the
wake-ups that are missing, so a fresh disk, or another box's jobs, get theirs.

Cost: a claim lists ``pending/<q>/`` (bodies are cached per ETag, so each
version of a job is fetched once per process) and reuses a listing up to
:data:`SNAPSHOT_SECS` old while it still offers a due job; a stale entry only
costs a failed CAS. Due times are compared with this box's clock, so boxes
sharing a bucket need NTP, as with the S3 lock strategy.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import random
import threading
import time
import uuid

from ..config import ConfigError
from ..storage.base import NotFound, StorageUnavailable
from .envelope import STORAGE_KEY, Envelope
from .sqlite_store import NO_LEASE_CHECK
from .wakeups import LocalWakeups

log = logging.getLogger("angos.queue.s3_store")

JOBS = "_jobs"
SNAPSHOT_SECS = 1.0  # how old a listing a claim, top_up or gauge may reuse
SWEEP_SECS = 30.0  # how often top_up repairs what a crash left half-written
CAS_RETRIES = 50
CLAIM_SPREAD = 8  # a claim starts at a random one of the oldest due jobs (fewer lost races)
_DELETE = object()

_verified: set[tuple] = set()
_verified_lock = threading.Lock()


def _hash(lock_key: str) -> str:
    return hashlib.sha256(lock_key.encode()).hexdigest()


def _env(doc: dict) -> Envelope:
    job = doc["job"]
    return Envelope(**{k: job[k] for k in Envelope.__dataclass_fields__ if k in job})


def _doc(env: Envelope, state: str, owner: str | None = None, lease_until: float | None = None,
         claim: str | None = None) -> dict:
    return {"job": dataclasses.asdict(env), "state": state, "owner": owner, "lease_until": lease_until,
            "claim": claim}


class S3JobStore:
    def __init__(self, store, queue: str, wake_db: str, huey_name: str, offload=None, verify: bool = True):
        self.s3 = store  # an angos.storage.s3.S3Store on the metadata bucket and prefix
        self.queue = queue
        self.pending_dir = f"{JOBS}/pending/{queue}/"
        self.failed_dir = f"{JOBS}/failed/{queue}/"
        self.keys_dir = f"{JOBS}/keys/{queue}/"
        self.wakeups = LocalWakeups(wake_db, huey_name, offload)
        self._cache: dict[str, tuple[str, dict]] = {}  # key -> (etag, body) last seen or written here
        self._guard = threading.Lock()
        self._snap: tuple[float, dict] | None = None  # (monotonic time, {key: (etag, body)}) of pending/<q>
        self._swept = 0.0
        self._claiming: set[str] = set()  # keys a thread of this process is claiming right now
        if verify:
            _verify_conditional_writes(store)

    # ------------------------------------------------------------ S3 primitives

    def _get(self, key: str) -> tuple[str, dict] | None:
        try:
            etag, raw = self.s3.get_versioned(key)
        except NotFound:
            self._forget(key)
            return None
        cur = etag, json.loads(raw)
        self._note(key, *cur)
        return cur

    def _put(self, key: str, doc: dict, if_match: str | None = None, create: bool = False) -> str | None:
        """PUT ``doc`` (with a fresh nonce); None when the precondition failed or the key is gone."""
        doc = {**doc, "rev": uuid.uuid4().hex}
        try:
            etag = self.s3.put_conditional(key, json.dumps(doc, separators=(",", ":")).encode(), if_match=if_match,
                                           if_absent=create, content_type="application/json")
        except NotFound:
            etag = None
        if etag is None:
            self._forget(key)  # what we knew of it is out of date
            return None
        self._note(key, etag, doc)
        return etag

    def _delete(self, key: str, etag: str) -> bool:
        try:
            deleted = self.s3.delete_if_match(key, etag)
        except NotFound:
            deleted = False
            self._forget(key)
        if deleted:
            self._forget(key)
        return deleted

    def _list(self, prefix: str, start_after: str | None = None):
        """(key, etag) under ``prefix`` in key order, page by page."""
        paginator = self.s3.client.get_paginator("list_objects_v2")
        kwargs = {"StartAfter": self.s3._k(start_after)} if start_after else {}
        full = self.s3._k(prefix) + "/"
        with self.s3._errors(prefix):
            for page in paginator.paginate(Bucket=self.s3.bucket, Prefix=full, **kwargs):
                for obj in page.get("Contents", ()):
                    yield prefix + obj["Key"][len(full):], obj["ETag"]

    # ------------------------------------------------------------ local knowledge

    def _note(self, key: str, etag: str, doc: dict) -> None:
        with self._guard:
            self._cache[key] = (etag, doc)
            if self._snap is not None and key.startswith(self.pending_dir):
                self._snap[1][key] = (etag, doc)

    def _forget(self, key: str) -> None:
        with self._guard:
            self._cache.pop(key, None)
            if self._snap is not None:
                self._snap[1].pop(key, None)

    def _body(self, key: str, etag: str) -> tuple[str, dict] | None:
        hit = self._cache.get(key)
        if hit is not None and hit[0] == etag:
            return hit
        return self._get(key)

    def _scan(self, max_age: float = 0.0) -> tuple[dict, bool]:
        """The jobs under ``pending/<q>/`` as {key: (etag, body)}; reuses a listing up to ``max_age`` old.
        Returns (rows, reused)."""
        snap = self._snap
        if snap is not None and time.monotonic() - snap[0] <= max_age:
            return snap[1], True
        taken = time.monotonic()
        rows = {}
        for key, etag in self._list(self.pending_dir):
            cur = self._body(key, etag)
            if cur is not None:
                rows[key] = cur
        with self._guard:
            for key in [k for k in self._cache if k.startswith(self.pending_dir) and k not in rows]:
                del self._cache[key]
            self._snap = (taken, rows)
        return rows, False

    def _update(self, key: str, fn):
        """Read-modify-write ``key`` with If-Match until it sticks. ``fn(body)`` returns the new body,
        ``_DELETE``, or None (precondition not met). Returns (old (etag, body) or None, new (etag, body),
        ``_DELETE`` or None). A cached version is only a first guess: only a write, or a fresh read, decides."""
        cached = self._cache.get(key)
        for attempt in range(CAS_RETRIES):
            fresh = attempt > 0 or cached is None
            cur = self._get(key) if fresh else cached
            if cur is None:
                return None, None
            etag, doc = cur
            new = fn(doc)
            if new is None:
                if fresh:
                    return cur, None
                continue
            if new is _DELETE:
                if self._delete(key, etag):
                    return cur, _DELETE
            else:
                e2 = self._put(key, new, if_match=etag)
                if e2 is not None:
                    return cur, (e2, new)
        raise StorageUnavailable(f"job object {key} kept changing; giving up after {CAS_RETRIES} attempts")

    # ------------------------------------------------------------ markers

    def _pkey(self, lock_key: str) -> str:
        return f"{self.keys_dir}{_hash(lock_key)}.pending"

    def _rkey(self, lock_key: str) -> str:
        return f"{self.keys_dir}{_hash(lock_key)}.running"

    def _is_pending(self, sk: str) -> tuple[str, dict] | None:
        cur = self._get(self.pending_dir + sk)
        return cur if cur is not None and cur[1]["state"] == "pending" else None

    def _ensure_pending_marker(self, lock_key: str, sk: str) -> str:
        """Make ``sk`` the pending job of ``lock_key``: "mine", or "other" when another pending job has it."""
        key, body = self._pkey(lock_key), {"lock_key": lock_key, "storage_key": sk}
        for _ in range(CAS_RETRIES):
            if self._put(key, body, create=True) is not None:
                return "mine"
            cur = self._get(key)
            if cur is None:
                continue
            etag, doc = cur
            if doc["storage_key"] == sk:
                if self._put(key, body, if_match=etag) is not None:  # re-affirmed: no sweep can delete it now
                    return "mine"
                continue
            if self._is_pending(doc["storage_key"]) is not None:
                return "other"
            self._delete(key, etag)  # stale: its job was claimed, finished or deleted
        raise StorageUnavailable(f"pending marker of {lock_key!r} kept changing")

    def _take_run_marker(self, lock_key: str, sk: str, claim: str, owner: str) -> bool:
        key = self._rkey(lock_key)
        body = {"lock_key": lock_key, "storage_key": sk, "claim": claim, "owner": owner}
        for _ in range(CAS_RETRIES):
            if self._put(key, body, create=True) is not None:
                return True
            cur = self._get(key)
            if cur is None:
                continue
            etag, doc = cur
            if self._run_marker_valid(doc):
                return False
            self._delete(key, etag)  # its run is over for good (a claim id never comes back)
        raise StorageUnavailable(f"run marker of {lock_key!r} kept changing")

    def _run_marker_valid(self, doc: dict, rows: dict | None = None) -> bool:
        key = self.pending_dir + doc["storage_key"]
        cur = rows.get(key) if rows is not None else self._get(key)
        return cur is not None and cur[1]["state"] == "running" and cur[1].get("claim") == doc.get("claim")

    def _release_run_marker(self, lock_key: str, sk: str, claim: str | None) -> None:
        key = self._rkey(lock_key)
        for cur in (self._cache.get(key), "read"):  # the marker we wrote saves a GET; else read it
            if cur == "read":
                cur = self._get(key)
            if cur is None or cur[1].get("storage_key") != sk or cur[1].get("claim") != claim:
                continue
            if self._delete(key, cur[0]):
                return

    def _wake_same_key(self, lock_key: str, sk: str, wake: bytes) -> None:
        """The run of ``sk`` is over: drop its own stale pending marker, or wake the key's pending job,
        whose wake-up was spent while this run held the key."""
        key = self._pkey(lock_key)
        cur = self._get(key)
        if cur is None:
            return
        etag, doc = cur
        if doc["storage_key"] == sk:
            self._delete(key, etag)
            return
        other = self._is_pending(doc["storage_key"])
        if other is not None:
            self.wakeups.push(wake, _env(other[1]).not_before)

    # ------------------------------------------------------------ lifecycle

    def add(self, env: Envelope, wake: bytes) -> bool:
        key = self.pending_dir + env.storage_key
        etag = self._put(key, _doc(env, "pending"), create=True)
        if etag is None:
            return False  # storage keys are unique: only a replayed envelope gets here
        if self._ensure_pending_marker(env.lock_key, env.storage_key) == "mine":
            self.wakeups.push(wake, env.not_before)  # after the S3 write: a wake-up always finds its job
            return True
        if self._delete(key, etag):
            return False  # coalesced into the pending job
        return self.get(env.storage_key) is not None  # already claimed: it is a new run after all

    def claim_next(self, owner: str, now: float, lease_until: float) -> Envelope | None:
        for attempt in range(2):
            rows, reused = self._scan(max_age=SNAPSHOT_SECS if attempt == 0 else 0.0)
            now = max(now, time.time())  # after listing: every job listed was stamped earlier
            items = list(rows.items())
            busy = {d["job"]["lock_key"] for _, (_, d) in items if d["state"] == "running"}
            due = sorted(((d["job"]["not_before"], key, etag, d) for key, (etag, d) in items
                          if d["state"] == "pending" and d["job"]["not_before"] <= now
                          and d["job"]["lock_key"] not in busy and key not in self._claiming),
                         key=lambda t: (t[0], t[1]))
            # Every one of these is due: drains on other boxes (and threads here) start at different
            # ones among the oldest few instead of all racing for the first.
            head = due[:CLAIM_SPREAD]
            random.shuffle(head)
            misses = 0
            for _, key, etag, doc in head + due[CLAIM_SPREAD:]:
                with self._guard:
                    if key in self._claiming:
                        continue
                    self._claiming.add(key)
                try:
                    env = self._claim(key, etag, doc, owner, lease_until)
                finally:
                    with self._guard:
                        self._claiming.discard(key)
                if env is not None:
                    return env
                misses += 1
                if reused and misses >= 2:
                    break  # the reused listing is out of date: list again
            if not reused:
                return None
        return None

    def _claim(self, key: str, etag: str, doc: dict, owner: str, lease_until: float) -> Envelope | None:
        claim = uuid.uuid4().hex
        running = {**doc, "state": "running", "owner": owner, "lease_until": lease_until, "claim": claim}
        if self._put(key, running, if_match=etag) is None:
            return None  # claimed, changed or deleted meanwhile
        env = _env(doc)
        if self._take_run_marker(env.lock_key, env.storage_key, claim, owner):
            return env
        # Another run of this key holds it: put the job back; it runs after that one.
        old, new = self._update(key, lambda d: {**doc, "state": "pending", "owner": None, "lease_until": None,
                                                "claim": None} if d.get("claim") == claim else None)
        if new is not None and self._ensure_pending_marker(env.lock_key, env.storage_key) == "other":
            self._update(key, lambda d: _DELETE if d["state"] == "pending" else None)  # a newer run covers it
        return None

    def complete(self, env: Envelope, owner: str, wake: bytes) -> bool:
        key = self.pending_dir + env.storage_key
        old, new = self._update(key, lambda d: _DELETE if d["state"] == "running" and d["owner"] == owner
                                else None)
        if new is not None:
            self._release_run_marker(env.lock_key, env.storage_key, old[1].get("claim"))
        self._wake_same_key(env.lock_key, env.storage_key, wake)
        return new is not None

    def _owned(self, owner: str, lease_before: float):
        return lambda d: (d["state"] == "running" and d["owner"] == owner
                          and (d["lease_until"] or 0.0) < lease_before)

    def reschedule(self, env: Envelope, owner: str, wake: bytes, lease_before: float = NO_LEASE_CHECK) -> str:
        """running → pending with ``env``'s new attempts/not_before. Returns retried | folded | lost."""
        key = self.pending_dir + env.storage_key
        owned = self._owned(owner, lease_before)
        old, new = self._update(key, lambda d: _doc(env, "pending") if owned(d) else None)
        if new is None:
            return "lost"
        self._release_run_marker(env.lock_key, env.storage_key, old[1].get("claim"))
        if self._ensure_pending_marker(env.lock_key, env.storage_key) == "mine":
            self.wakeups.push(wake, env.not_before)
            return "retried"
        # A newer run of the same key was enqueued meanwhile; it covers this one.
        self._update(key, lambda d: _DELETE if d["state"] == "pending" else None)
        self._wake_same_key(env.lock_key, env.storage_key, wake)
        return "folded"

    def dead_letter(self, env: Envelope, owner: str, wake: bytes, lease_before: float = NO_LEASE_CHECK) -> bool:
        key = self.pending_dir + env.storage_key
        owned = self._owned(owner, lease_before)
        old, new = self._update(key, lambda d: _doc(env, "failed") if owned(d) else None)
        if new is not None:  # the CAS to "failed" is the commit point; the move below is tidying
            self._release_run_marker(env.lock_key, env.storage_key, old[1].get("claim"))
            self._move_to_failed(key, *new)
        self._wake_same_key(env.lock_key, env.storage_key, wake)
        return new is not None

    def _move_to_failed(self, key: str, etag: str, doc: dict) -> None:
        sk = key[len(self.pending_dir):]
        self._put(self.failed_dir + sk, {"job": doc["job"], "state": "failed"})
        self._delete(key, etag)

    def heartbeat(self, owner: str, lease_until: float) -> int:
        rows, _ = self._scan()
        n = 0
        for key, (_, doc) in list(rows.items()):
            if doc["state"] != "running" or doc["owner"] != owner:
                continue
            _, new = self._update(key, lambda d: {**d, "lease_until": lease_until}
                                  if d["state"] == "running" and d["owner"] == owner else None)
            n += new is not None
        return n

    def running(self) -> list[tuple[Envelope, str, float]]:
        rows, _ = self._scan()
        return [(_env(d), d["owner"], d["lease_until"]) for _, (_, d) in list(rows.items())
                if d["state"] == "running"]

    # ------------------------------------------------------------ admin

    def list(self, state: str, after: str | None, n: int) -> tuple[list[tuple[Envelope, str]], bool]:
        prefix = self.pending_dir if state == "pending" else self.failed_dir
        out: list[tuple[Envelope, str]] = []
        for key, etag in self._list(prefix, prefix + after if after else None):
            cur = self._body(key, etag)
            if cur is None:
                continue
            st = cur[1]["state"]
            if state == "pending" and st not in ("pending", "running"):
                continue  # a dead letter on its way to failed/
            if len(out) == n:
                return out, True
            out.append((_env(cur[1]), st if state == "pending" else "failed"))
        return out, False

    def get(self, storage_key: str) -> tuple[Envelope, str] | None:
        if not STORAGE_KEY.fullmatch(storage_key):
            return None
        for prefix in (self.pending_dir, self.failed_dir):
            cur = self._get(prefix + storage_key)
            if cur is not None:
                return _env(cur[1]), cur[1]["state"]
        return None

    def delete(self, storage_key: str, state: str) -> bool:
        if not STORAGE_KEY.fullmatch(storage_key):
            return False
        if state == "pending":
            old, new = self._update(self.pending_dir + storage_key,
                                    lambda d: _DELETE if d["state"] == "pending" else None)
            if new is None:
                return False
            lock_key = old[1]["job"]["lock_key"]
            cur = self._get(self._pkey(lock_key))
            if cur is not None and cur[1]["storage_key"] == storage_key:
                self._delete(self._pkey(lock_key), cur[0])
            return True
        _, new = self._update(self.failed_dir + storage_key, lambda d: _DELETE)
        return new is not None

    def retry_failed(self, storage_key: str, now: float, wake: bytes) -> bool:
        if not STORAGE_KEY.fullmatch(storage_key):
            return False
        failed_key, key = self.failed_dir + storage_key, self.pending_dir + storage_key
        cur = self._get(failed_key)
        if cur is None:
            return False
        env = _env(cur[1]).with_(attempts=0, not_before=now, failed_at=None)
        if self._put(key, _doc(env, "pending"), create=True) is None:
            # Only a dead letter still being moved out of pending/ may sit there; otherwise a
            # concurrent retry won.
            _, gone = self._update(key, lambda d: _DELETE if d["state"] == "failed" else None)
            if gone is None or self._put(key, _doc(env, "pending"), create=True) is None:
                return False
        self._delete(failed_key, cur[0])
        if self._ensure_pending_marker(env.lock_key, storage_key) == "mine":
            self.wakeups.push(wake, now)
        else:
            self._update(key, lambda d: _DELETE if d["state"] == "pending" else None)
            self._wake_same_key(env.lock_key, storage_key, wake)
        return True

    # ------------------------------------------------------------ gauges and housekeeping

    def count_pending(self, horizon: float, cap: int) -> int:
        rows, _ = self._scan(SNAPSHOT_SECS)
        return min(cap, sum(1 for _, (_, d) in list(rows.items())
                            if d["state"] == "pending" and d["job"]["not_before"] <= horizon))

    def lock_keys(self, state: str, cap: int) -> list[tuple[str, str]]:
        """(lock_key, storage_key) of up to ``cap`` jobs, oldest first: ``pending`` (pending and running,
        from a listing up to :data:`SNAPSHOT_SECS` old) or ``failed`` (each body fetched once per ETag)."""
        out = []
        if state == "pending":
            rows, _ = self._scan(SNAPSHOT_SECS)
            for key, (_, d) in sorted(list(rows.items())):
                if d["state"] in ("pending", "running"):
                    out.append((d["job"]["lock_key"], key[len(self.pending_dir):]))
                    if len(out) >= cap:
                        break
            return out
        for key, etag in self._list(self.failed_dir):
            cur = self._body(key, etag)
            if cur is not None:
                out.append((cur[1]["job"]["lock_key"], key[len(self.failed_dir):]))
                if len(out) >= cap:
                    break
        return out

    def count_failed(self, cap: int) -> int:
        n = 0
        for _ in self._list(self.failed_dir):
            n += 1
            if n >= cap:
                break
        return n

    def top_up(self, now: float, wake: bytes, cap: int = 100) -> int:
        """Add wake-ups so that every claimable job on S3 has one here (a fresh disk, a crash, or
        another box's jobs), and now and then repair what interrupted writes left."""
        if time.monotonic() - self._swept >= SWEEP_SECS:
            self._swept = time.monotonic()
            self._sweep()
        rows, _ = self._scan(SNAPSHOT_SECS)
        now = max(now, time.time())
        items = list(rows.items())
        busy = {d["job"]["lock_key"] for _, (_, d) in items if d["state"] == "running"}
        claimable = sum(1 for _, (_, d) in items if d["state"] == "pending" and d["job"]["not_before"] <= now
                        and d["job"]["lock_key"] not in busy)
        missing = max(0, min(claimable, cap) - self.wakeups.queued())
        for _ in range(missing):
            self.wakeups.push(wake, now)
        return missing

    def _sweep(self) -> None:
        # Markers first, jobs second: a marker judged against a later view of its job is judged fairly.
        markers = []
        for key, etag in self._list(self.keys_dir):
            cur = self._body(key, etag)
            if cur is not None:
                markers.append((key, *cur))
        rows, _ = self._scan()
        failed = dict(self._list(self.failed_dir))
        for key, (etag, doc) in list(rows.items()):
            sk = key[len(self.pending_dir):]
            if doc["state"] == "failed":
                self._move_to_failed(key, etag, doc)
            elif self.failed_dir + sk in failed:
                self._delete(self.failed_dir + sk, failed[self.failed_dir + sk])  # retried before a crash
        for key, etag, doc in markers:
            if key.endswith(".running"):
                stale = not self._run_marker_valid(doc, rows)
            else:
                job = rows.get(self.pending_dir + doc["storage_key"])
                stale = job is None or job[1]["state"] != "pending"
            if stale:
                self._delete(key, etag)

    def close(self) -> None:
        self.wakeups.close()


def _verify_conditional_writes(store) -> None:
    """Refuse an S3 endpoint that ignores If-None-Match (coalescing and run exclusion rely on it)."""
    ident = (store.endpoint, store.bucket, store.prefix)
    with _verified_lock:
        if ident in _verified:
            return
    verdict = store.honours_conditional_writes(f"{JOBS}/probe-{uuid.uuid4().hex}")
    if verdict is None:
        return  # not a verdict: the job store's own calls report the outage
    if not verdict:
        raise ConfigError(
            f"the S3 endpoint {store.endpoint or '(default)'} does not honour conditional writes (If-None-Match: *), "
            "so the in-process job queue kept in the S3 metadata store could run a job twice; add "
            "[global.job_queue] with backend = \"redis\" and run angos worker instead")
    with _verified_lock:
        _verified.add(ident)
