"""Huey wake-ups in a box-local SQLite file, for a job store that keeps the jobs elsewhere.

The S3 job store (:mod:`.s3_store`) keeps job state in the metadata bucket
but Huey still needs a local queue to wake consumers: :class:`LocalWakeups`
writes the same ``task``/``schedule`` rows as :class:`.sqlite_store.SqliteJobStore`
(:func:`.sqlite_store.insert_wakeup`) into ``$ANGOS_JOBS_DIR/pending/<queue>/queue.db``,
shared by every process of the box. The rows are not durable state (the job
store rebuilds missing ones), so commits skip the fsync.
"""

from __future__ import annotations

import sqlite3
import threading

from .sqlite_store import insert_wakeup


class LocalWakeups:
    """Huey wake-up messages in the box's local queue database (the same rows SqliteJobStore writes)."""

    def __init__(self, path: str, huey_name: str, offload=None):
        self.path = path
        self.huey_name = huey_name
        self.offload = offload  # under gevent: run sqlite3 in a native thread, not on the event loop
        self._local = threading.local()

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=5.0, isolation_level=None, check_same_thread=False)
        conn.execute("pragma journal_mode=wal")
        conn.execute("pragma synchronous=normal")  # wake-ups are rebuilt from S3 if lost: no fsync each
        return conn

    def _conn(self) -> sqlite3.Connection:
        if self.offload is not None:  # a connection per call: nothing shared between native threads
            return self._connect()
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self._connect()
        return conn

    def _run(self, fn, *args):
        def call():
            conn = self._conn()
            try:
                return fn(conn, *args)
            finally:
                if self.offload is not None:
                    conn.close()

        return self.offload(call) if self.offload is not None else call()

    def push(self, msg: bytes, at: float) -> None:
        self._run(insert_wakeup, self.huey_name, msg, at)

    def queued(self) -> int:
        return self._run(lambda conn: conn.execute("select count(*) from task where queue = ?",
                                                   (self.huey_name,)).fetchone()[0])

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
