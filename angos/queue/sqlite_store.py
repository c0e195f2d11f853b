"""Job state in SQLite, in the same database file as the queue's Huey tables.

One row per job in ``angos_jobs`` with ``state`` pending | running | failed.
The guarantees come from SQLite itself, never from read-then-write in Python:

- coalescing: a partial UNIQUE index allows one *pending* row per
  ``lock_key``; an insert that hits it is the dedup hit (atomic across
  processes, like Huey's ``put_if_empty`` on the kv table);
- no job runs twice at once: a second partial UNIQUE index allows one
  *running* row per ``lock_key``, and claiming is one ``BEGIN IMMEDIATE``
  transaction that moves the oldest due pending row whose key is not running;
- every state change that makes a job runnable inserts a Huey wake-up message
  (into Huey's ``task`` table when due now, its ``schedule`` table otherwise)
  in the same transaction, so a committed job always has its wake-up.

Connections: consumer processes keep one connection per thread. Under gevent
(the web workers) sqlite3 would block the event loop, so the queue runs every
store call in gevent's native thread pool and this store opens a connection
per call (``per_call=True``): no connection or lock object is shared between
native threads.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from contextlib import contextmanager

from .envelope import Envelope

NO_LEASE_CHECK = 1e18  # "any lease": the owner itself is recording its job's outcome

SCHEMA = (
    "create table if not exists angos_jobs ("
    " storage_key text primary key, state text not null, lock_key text not null,"
    " not_before real not null, owner text, lease_until real, body text not null)",
    "create unique index if not exists angos_jobs_one_pending on angos_jobs(lock_key) where state = 'pending'",
    "create unique index if not exists angos_jobs_one_running on angos_jobs(lock_key) where state = 'running'",
    "create index if not exists angos_jobs_state_due on angos_jobs(state, not_before)",
)


class SqliteJobStore:
    def __init__(self, path: str, huey_name: str, sync_full: bool = False, busy_timeout: float = 5.0,
                 per_call: bool = False):
        self.path = path
        self.huey_name = huey_name
        self.sync_full = sync_full
        self.busy_timeout = busy_timeout
        self.per_call = per_call
        self._local = threading.local()
        with self._tx() as conn:
            for stmt in SCHEMA:
                conn.execute(stmt)

    # ------------------------------------------------------------ plumbing

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=self.busy_timeout, isolation_level=None,
                               check_same_thread=False)
        conn.execute("pragma journal_mode=wal")
        # NORMAL in WAL mode survives a killed process; FULL also survives power loss.
        conn.execute(f"pragma synchronous={'full' if self.sync_full else 'normal'}")
        return conn

    def _conn(self) -> sqlite3.Connection:
        if self.per_call:
            return self._connect()
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self._connect()
        return conn

    @contextmanager
    def _tx(self):
        conn = self._conn()
        try:
            conn.execute("begin immediate")
            try:
                yield conn
            except BaseException:
                conn.execute("rollback")
                raise
            conn.execute("commit")
        finally:
            if self.per_call:
                conn.close()

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def _wake(self, conn, msg: bytes, at: float) -> None:
        insert_wakeup(conn, self.huey_name, msg, at)

    @staticmethod
    def _env(row) -> Envelope:
        return Envelope.from_json(row[0])

    # ------------------------------------------------------------ lifecycle

    def add(self, env: Envelope, wake: bytes) -> bool:
        try:
            with self._tx() as conn:
                conn.execute("insert into angos_jobs (storage_key, state, lock_key, not_before, body) "
                             "values (?, 'pending', ?, ?, ?)",
                             (env.storage_key, env.lock_key, env.not_before, env.to_json()))
                self._wake(conn, wake, env.not_before)
        except sqlite3.IntegrityError:
            return False
        return True

    def claim_next(self, owner: str, now: float, lease_until: float) -> Envelope | None:
        with self._tx() as conn:
            # "Now" is read once the write lock is held: every job committed before this point
            # was stamped earlier, so a wake-up can never miss the job it was issued for.
            now = max(now, time.time())
            row = conn.execute(
                "select storage_key, body from angos_jobs j where state = 'pending' and not_before <= ? "
                "and not exists (select 1 from angos_jobs r where r.state = 'running' and r.lock_key = j.lock_key) "
                "order by not_before, storage_key limit 1", (now,)).fetchone()
            if row is None:
                return None
            conn.execute("update angos_jobs set state = 'running', owner = ?, lease_until = ? where storage_key = ?",
                         (owner, lease_until, row[0]))
            return Envelope.from_json(row[1])

    def _wake_same_key(self, conn, lock_key: str, wake: bytes) -> None:
        # A pending run of the same key could not start while this one ran; its wake-up was spent.
        row = conn.execute("select not_before from angos_jobs where state = 'pending' and lock_key = ?",
                           (lock_key,)).fetchone()
        if row is not None:
            self._wake(conn, wake, row[0])

    def complete(self, env: Envelope, owner: str, wake: bytes) -> bool:
        with self._tx() as conn:
            cur = conn.execute("delete from angos_jobs where storage_key = ? and state = 'running' and owner = ?",
                               (env.storage_key, owner))
            self._wake_same_key(conn, env.lock_key, wake)
            return cur.rowcount == 1

    def reschedule(self, env: Envelope, owner: str, wake: bytes, lease_before: float = NO_LEASE_CHECK) -> str:
        """running → pending with ``env``'s new attempts/not_before. Returns retried | folded | lost.

        Only while ``owner`` holds the job and (for a reclaim) its lease ends before ``lease_before``,
        so a worker that renewed its lease meanwhile keeps its job."""
        with self._tx() as conn:
            row = conn.execute("select 1 from angos_jobs where storage_key = ? and state = 'running' and owner = ? "
                               "and lease_until < ?", (env.storage_key, owner, lease_before)).fetchone()
            if row is None:
                return "lost"
            try:
                conn.execute("update angos_jobs set state = 'pending', owner = null, lease_until = null, "
                             "not_before = ?, body = ? where storage_key = ?",
                             (env.not_before, env.to_json(), env.storage_key))
            except sqlite3.IntegrityError:
                # A newer run of the same key was enqueued meanwhile; it covers this one.
                conn.execute("delete from angos_jobs where storage_key = ?", (env.storage_key,))
                self._wake_same_key(conn, env.lock_key, wake)
                return "folded"
            self._wake(conn, wake, env.not_before)
            return "retried"

    def dead_letter(self, env: Envelope, owner: str, wake: bytes, lease_before: float = NO_LEASE_CHECK) -> bool:
        with self._tx() as conn:
            cur = conn.execute("update angos_jobs set state = 'failed', owner = null, lease_until = null, body = ? "
                               "where storage_key = ? and state = 'running' and owner = ? and lease_until < ?",
                               (env.to_json(), env.storage_key, owner, lease_before))
            self._wake_same_key(conn, env.lock_key, wake)
            return cur.rowcount == 1

    def heartbeat(self, owner: str, lease_until: float) -> int:
        with self._tx() as conn:
            return conn.execute("update angos_jobs set lease_until = ? where state = 'running' and owner = ?",
                                (lease_until, owner)).rowcount

    def running(self) -> list[tuple[Envelope, str, float]]:
        with self._tx() as conn:
            rows = conn.execute("select body, owner, lease_until from angos_jobs where state = 'running'").fetchall()
        return [(Envelope.from_json(b), o, lease) for b, o, lease in rows]

    # ------------------------------------------------------------ admin

    def list(self, state: str, after: str | None, n: int) -> tuple[list[tuple[Envelope, str]], bool]:
        states = ("pending", "running") if state == "pending" else ("failed",)
        with self._tx() as conn:
            rows = conn.execute(
                f"select body, state from angos_jobs where state in ({','.join('?' * len(states))}) "
                "and storage_key > ? order by storage_key limit ?", (*states, after or "", n + 1)).fetchall()
        return [(Envelope.from_json(b), s) for b, s in rows[:n]], len(rows) > n

    def get(self, storage_key: str) -> tuple[Envelope, str] | None:
        with self._tx() as conn:
            row = conn.execute("select body, state from angos_jobs where storage_key = ?", (storage_key,)).fetchone()
        return (Envelope.from_json(row[0]), row[1]) if row else None

    def delete(self, storage_key: str, state: str) -> bool:
        with self._tx() as conn:
            return conn.execute("delete from angos_jobs where storage_key = ? and state = ?",
                                (storage_key, state)).rowcount == 1

    def retry_failed(self, storage_key: str, now: float, wake: bytes) -> bool:
        with self._tx() as conn:
            row = conn.execute("select body from angos_jobs where storage_key = ? and state = 'failed'",
                               (storage_key,)).fetchone()
            if row is None:
                return False
            env = Envelope.from_json(row[0]).with_(attempts=0, not_before=now, failed_at=None)
            try:
                conn.execute("update angos_jobs set state = 'pending', not_before = ?, body = ? where storage_key = ?",
                             (now, env.to_json(), storage_key))
            except sqlite3.IntegrityError:
                conn.execute("delete from angos_jobs where storage_key = ?", (storage_key,))
                self._wake_same_key(conn, env.lock_key, wake)
                return True
            self._wake(conn, wake, now)
            return True

    # ------------------------------------------------------------ gauges and housekeeping

    def count_pending(self, horizon: float, cap: int) -> int:
        with self._tx() as conn:
            return conn.execute("select count(*) from (select 1 from angos_jobs where state = 'pending' "
                                "and not_before <= ? limit ?)", (horizon, cap)).fetchone()[0]

    def lock_keys(self, state: str, cap: int) -> list[tuple[str, str]]:
        """(lock_key, storage_key) of up to ``cap`` jobs, oldest first: ``pending`` (pending and running)
        or ``failed``. No job bodies are read."""
        states = ("pending", "running") if state == "pending" else ("failed",)
        with self._tx() as conn:
            return conn.execute(f"select lock_key, storage_key from angos_jobs where state in "
                                f"({','.join('?' * len(states))}) order by storage_key limit ?",
                                (*states, cap)).fetchall()

    def count_failed(self, cap: int) -> int:
        with self._tx() as conn:
            return conn.execute("select count(*) from (select 1 from angos_jobs where state = 'failed' limit ?)",
                                (cap,)).fetchone()[0]

    def top_up(self, now: float, wake: bytes, cap: int = 100) -> int:
        """Add wake-ups so that every claimable job has one (repairs a wake-up lost in a crash)."""
        with self._tx() as conn:
            now = max(now, time.time())
            claimable = conn.execute(
                "select count(*) from (select 1 from angos_jobs j where state = 'pending' and not_before <= ? "
                "and not exists (select 1 from angos_jobs r where r.state = 'running' and r.lock_key = j.lock_key) "
                "limit ?)", (now, cap)).fetchone()[0]
            queued = conn.execute("select count(*) from task where queue = ?", (self.huey_name,)).fetchone()[0]
            missing = max(0, claimable - queued)
            for _ in range(missing):
                self._wake(conn, wake, now)
            return missing


def insert_wakeup(conn, huey_name: str, msg: bytes, at: float) -> None:
    """One Huey wake-up for a job due at ``at``: in Huey's ``task`` table when due now, else ``schedule``."""
    if at <= time.time():
        conn.execute("insert into task (queue, data, priority) values (?, ?, 0)", (huey_name, msg))
    else:
        conn.execute("insert into schedule (queue, data, timestamp) values (?, ?, ?)",
                     (huey_name, msg, huey_timestamp(at)))


def huey_timestamp(epoch: float) -> float:
    """The schedule timestamp Huey stores for a due time: its naive-UTC datetime read as local time."""
    from datetime import datetime, timezone

    return datetime.fromtimestamp(epoch, timezone.utc).replace(tzinfo=None).timestamp()
