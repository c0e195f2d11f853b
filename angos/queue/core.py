"""The queue itself: ``make_huey(cfg, queue)`` and :class:`JobQueue`.

``make_huey`` is the one place a Huey instance is built: ``SqliteHuey`` on
``<metadata fs root>/_jobs/pending/<queue>/queue.db`` by default, ``RedisHuey`` (blocking
pops) with ``[global.job_queue] backend = "redis"``. Huey carries *wake-ups*:
one message per runnable job, each meaning "claim the next due job". The
job state itself (envelope, pending/running/failed) lives in a store beside
Huey's own tables/keys (:mod:`.sqlite_store`, :mod:`.redis_store`), because
Huey's dequeue is destructive: a message popped by a process that is then
killed is gone, while our running record survives it. With an S3 metadata
store and no ``[global.job_queue]`` the job state lives in the metadata bucket
(:mod:`.s3_store`) and the SQLite file under ``$ANGOS_JOBS_DIR`` holds only the
box's wake-ups, which :meth:`JobQueue.top_up` rebuilds from S3.

Producer contract: :meth:`JobQueue.enqueue` returns True for a new job, False
for a coalesced duplicate *or a failure*; it never raises (failures are
logged and counted in ``angos_job_queue_enqueue_failures_total``).
:meth:`JobQueue.submit` is the raising variant for callers that report
errors themselves (scrub).

Wake-up accounting: every change that makes a job runnable adds one wake-up in
the same transaction (or Lua script) as the change, and a wake-up that finds
nothing to claim is simply spent. A wake-up lost in a crash (popped by a
process that was then killed) is re-issued by :meth:`top_up`, which every
consumer runs every few seconds.

Consumer contract (:meth:`JobQueue.run_next`, the Huey task): claim the next
due job whose ``lock_key`` is not running anywhere, run its handler, then
complete, retry with backoff (``min(min_ms × 2^attempts, max_ms)``) or
dead-letter it. A running job holds a lease renewed by :meth:`heartbeat`;
:meth:`reclaim` gives jobs of dead owners (a process on this host that is
gone, or an expired lease) another run, counting the lost run as an attempt.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
import threading
import time
import traceback
import uuid

from huey import RedisHuey, SqliteHuey
from huey.storage import SqliteStorage

from .. import metrics as m
from ..config import JobQueueConfig
from ..native import under_gevent
from ..oci.errors import AngosError
from ..outage import is_unreachable, one_line, outage, redis_address
from .envelope import QUEUES, Envelope, backoff_secs, created_at_of
from .kinds import DeferJob, JobContext, TerminalJobError, handler_for
from .layout import jobs_dir, jobs_on_s3, queue_db
from .sqlite_store import NO_LEASE_CHECK

log = logging.getLogger("angos.queue")

LEASE_SECS = 30.0
SATURATION = 10000
FAILED_INDEX_SECS = 2.0
WAKE_TASK = "angos.wake"


def queue_config(cfg, queue: str | None = None) -> JobQueueConfig:
    """``[global.job_queue]``, or its defaults for the server's in-process drain. For the
    ``replication`` queue, ``[global.replication]``'s retry settings win where they are set
    (they apply in every mode, with or without ``[global.job_queue]``)."""
    jq = cfg.global_.job_queue or JobQueueConfig()
    if queue == "replication":
        rs = cfg.global_.replication
        changes = {k: getattr(rs, k) for k in ("max_attempts", "retry_backoff_min_ms", "retry_backoff_max_ms")
                   if getattr(rs, k) is not None}
        if changes:
            jq = dataclasses.replace(jq, **changes)
    return jq


class _NoRevoke:
    """Angos never revokes Huey messages (jobs are deleted in the job store), so skip
    the two kv round trips Huey spends per message checking and clearing revocations."""

    def is_revoked(self, task, timestamp=None, peek=True):
        return False

    def delete(self, key):
        if isinstance(key, str) and key.startswith("r:"):
            return False
        return super().delete(key)


class AngosSqliteStorage(SqliteStorage):
    """Huey's SQLite storage with ``synchronous=NORMAL`` (WAL): commits survive a killed
    process without an fsync each; ``sync_to_disk`` selects FULL (survives power loss)."""

    def _create_connection(self):
        conn = super()._create_connection()
        if self._fsync is None:
            conn.execute("pragma synchronous=1")
        return conn


class AngosSqliteHuey(_NoRevoke, SqliteHuey):
    storage_class = AngosSqliteStorage


class AngosRedisHuey(_NoRevoke, RedisHuey):
    pass


def make_huey(cfg, queue: str, poll_interval: float = 1.0, create_root: bool = True):
    """Build the Huey instance of ``queue`` (``replication`` or ``cache``).

    ``create_root=False`` refuses to create a missing metadata root (the server's drain must not
    recreate a data directory that vanished, e.g. an unmounted volume, on the disk beneath it)."""
    if queue not in QUEUES:
        raise ValueError(f"unknown queue {queue!r}; valid: {', '.join(QUEUES)}")
    jq = queue_config(cfg)
    if jq.backend == "redis":
        return AngosRedisHuey(f"angos_{queue}", url=jq.url, results=False, utc=True, blocking=True,
                              read_timeout=max(1, round(poll_interval)))
    path = queue_db(cfg, queue)
    root = os.path.dirname(jobs_dir(cfg))
    if not create_root and not os.path.isdir(root):
        raise AngosError(f"the job queue's directory {root} does not exist")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    sync = bool(cfg.metadata.fs is not None and cfg.metadata.fs.sync_to_disk)
    return AngosSqliteHuey(queue, filename=path, results=False, utc=True, fsync=True if sync else None, timeout=5)


def _process_start(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[1].split()[19].decode()
    except (OSError, IndexError):
        return None


def _machine() -> str:
    """This host and PID namespace: hostname, kernel boot id, pid namespace inode.

    Two containers may share a hostname or a kernel; only a process that shares
    all three can look the owner's pid up and trust the answer."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as fh:
            boot = fh.read().strip()[:8]
        pidns = str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        boot, pidns = uuid.uuid4().hex[:8], "?"  # unknown: never claim to share a namespace
    return f"{socket.gethostname().replace('/', '_')}:{boot}:{pidns}"


_MACHINE = _machine()


def make_owner() -> str:
    """``machine/pid/process-start/nonce``: lets a process in the same PID namespace tell a dead owner at once."""
    pid = os.getpid()
    return f"{_MACHINE}/{pid}/{_process_start(pid)}/{uuid.uuid4().hex[:8]}"


def owner_is_dead_here(owner: str) -> bool:
    """True when ``owner`` was a process in this PID namespace that no longer runs."""
    try:
        machine, pid, start, _ = owner.split("/")
    except ValueError:
        return False
    return machine == _MACHINE and _process_start(int(pid)) != start


class JobQueue:
    def __init__(self, cfg, queue: str, huey=None, poll_interval: float = 1.0, lease_secs: float = LEASE_SECS,
                 create_root: bool = True):
        self.cfg = cfg
        self.name = queue
        self.qcfg = queue_config(cfg, queue)
        self.huey = huey if huey is not None else make_huey(cfg, queue, poll_interval, create_root)
        self.lease_secs = lease_secs
        self.owner = make_owner()
        self._task = self.huey.task(name=WAKE_TASK)(self.run_next)
        self._gevent = under_gevent()
        if self.qcfg.backend == "redis":
            from .redis_store import RedisJobStore

            st = self.huey.storage
            self.store = RedisJobStore(st.conn, queue, st.queue_key, st.schedule_key)
            self._threadpool = False
        elif jobs_on_s3(cfg):
            from ..storage.s3 import S3Store
            from .s3_store import S3JobStore

            st = self.huey.storage
            # boto3 yields to gevent by itself; only the local wake-up inserts (sqlite3) need a native thread.
            self.store = S3JobStore(S3Store.from_config(cfg.metadata.s3), queue, st.filename, st.name,
                                    offload=_native if self._gevent else None)
            self._threadpool = False
        else:
            from .sqlite_store import SqliteJobStore

            st = self.huey.storage
            sync = bool(cfg.metadata.fs is not None and cfg.metadata.fs.sync_to_disk)
            # Under gevent the store runs in native threads: a connection per call, short busy wait.
            self.store = SqliteJobStore(st.filename, st.name, sync_full=sync,
                                        busy_timeout=2.0 if self._gevent else 5.0, per_call=self._gevent)
            self._threadpool = self._gevent
        # Every loop over this queue's backend reports outages here: one line down, one line back.
        self.outage = outage(_backend_name(cfg, self.qcfg))
        self.context = JobContext(cfg=cfg, queue=queue, enqueue=self._enqueue_from_handler)
        self.siblings: dict[str, "JobQueue"] = {queue: self}
        self._failed: tuple[float, dict[str, list[str]]] = (-FAILED_INDEX_SECS, {})
        self._index_lock = threading.Lock()

    # ------------------------------------------------------------ plumbing

    def _call(self, fn, *args):
        if self._threadpool:
            import gevent

            return gevent.get_hub().threadpool.apply(fn, args)
        return fn(*args)

    def _wake_msg(self) -> bytes:
        return self.huey.serialize_task(self._task.s())

    # ------------------------------------------------------------ producers

    def submit(self, kind: str, lock_key: str, payload: dict | None = None, delay: float = 0.0,
               max_attempts: int | None = None) -> bool:
        """Enqueue; True if a new job was created, False if ``lock_key`` was already pending. Raises on failure.
        ``max_attempts`` overrides the queue's for this job (a webhook's own ``max_retries + 1``)."""
        env = Envelope.new(kind, lock_key, payload or {}, max_attempts or self.qcfg.max_attempts, delay)
        created = self._call(self.store.add, env, self._wake_msg())
        m.JOB_QUEUE_ENQUEUED.labels(self.name, "miss" if created else "hit").inc()
        if created:
            log.debug("enqueued %s %s lock_key=%s", self.name, kind, lock_key)
        return created

    def enqueue(self, kind: str, lock_key: str, payload: dict | None = None, delay: float = 0.0,
                max_attempts: int | None = None) -> bool:
        """Like :meth:`submit` but never raises: a failure is logged, counted and returns False."""
        try:
            created = self.submit(kind, lock_key, payload, delay, max_attempts)
        except Exception as exc:  # noqa: BLE001 - an enqueue must never fail the request that triggered it
            m.JOB_QUEUE_ENQUEUE_FAILURES.labels(self.name).inc()
            if is_unreachable(exc):
                self.outage.failed(exc)  # once per outage; each lost job still gets its own line below
                log.warning("enqueue to %s failed (kind=%s lock_key=%s): %s", self.name, kind, lock_key,
                            one_line(exc))
            else:
                log.exception("enqueue to %s failed (kind=%s lock_key=%s)", self.name, kind, lock_key)
            return False
        self.outage.ok()
        return created

    def _enqueue_from_handler(self, queue: str, kind: str, lock_key: str, payload: dict | None = None,
                              delay: float = 0.0) -> bool:
        target = self.siblings.get(queue)
        if target is None:
            target = self.siblings[queue] = JobQueue(self.cfg, queue)
        return target.enqueue(kind, lock_key, payload, delay)

    # ------------------------------------------------------------ consumers

    def run_next(self) -> str | None:
        """The Huey task behind every wake-up: run one due job, if any. Returns its outcome."""
        now = time.time()
        try:
            job = self.store.claim_next(self.owner, now, now + self.lease_secs)
        except Exception as exc:
            if not is_unreachable(exc):
                raise
            # This wake-up is spent; top_up issues it again once the store answers.
            self.outage.failed(exc)
            return None
        self.outage.ok()
        if job is None:
            return None
        handler = handler_for(job.kind)
        started = time.perf_counter()
        try:
            if handler is None:
                raise LookupError(f"no handler is registered for job kind {job.kind!r} in this process")
            handler(job, self.context)
        except DeferJob as exc:
            outcome = self._defer(job, exc.delay, str(exc))
            m.JOB_RUNS.labels(self.name, outcome).inc()
            log.debug("job %s kind=%s lock_key=%s deferred %.3fs: %s", job.storage_key, job.kind, job.lock_key,
                      exc.delay, exc)
            return outcome
        except TerminalJobError as exc:
            outcome = self._fail(job, self.owner, _describe(exc), terminal=True)
        except Exception as exc:  # noqa: BLE001 - every other failure is retryable
            log.debug("job %s failed:\n%s", job.storage_key, traceback.format_exc())
            outcome = self._fail(job, self.owner, _describe(exc), terminal=False)
        else:
            owned = _persist(self.store.complete, job, self.owner, self._wake_msg())
            outcome = "succeeded" if owned else "lost"
            if owned:
                self.clear_failed({job.lock_key})
        m.JOB_RUNS.labels(self.name, outcome).inc()
        m.JOB_DURATION.labels(self.name).observe(time.perf_counter() - started)
        log.info("job %s kind=%s lock_key=%s attempt=%d %s", job.storage_key, job.kind, job.lock_key,
                 job.attempts + 1, outcome)
        return outcome

    def _fail(self, job: Envelope, owner: str, error: str, terminal: bool,
              lease_before: float = NO_LEASE_CHECK) -> str:
        """Retry ``job`` after its backoff or dead-letter it; "lost" if ``owner`` no longer holds it."""
        attempts = job.attempts + 1
        now = time.time()
        if terminal or attempts >= job.max_attempts:
            done = job.with_(attempts=attempts, last_error=error, failed_at=now)
            if not _persist(self.store.dead_letter, done, owner, self._wake_msg(), lease_before):
                return "lost"
            self._failed = (-FAILED_INDEX_SECS, {})  # list it afresh: a later success must find it
            log.warning("job %s kind=%s lock_key=%s dead-lettered after %d attempt(s): %s", job.storage_key,
                        job.kind, job.lock_key, attempts, error)
            return "dead_lettered"
        delay = backoff_secs(job.attempts, self.qcfg.retry_backoff_min_ms, self.qcfg.retry_backoff_max_ms)
        again = job.with_(attempts=attempts, last_error=error, not_before=now + delay)
        res = _persist(self.store.reschedule, again, owner, self._wake_msg(), lease_before)
        log.info("job %s kind=%s failed (attempt %d/%d), %s (delay %.3fs): %s", job.storage_key, job.kind,
                 attempts, job.max_attempts, res, delay, error)
        return res

    def _defer(self, job: Envelope, delay: float, reason: str) -> str:
        """Back to pending after ``delay`` with its attempts unchanged: "deferred", "folded" or "lost"."""
        again = job.with_(not_before=time.time() + delay, last_error=reason)
        res = _persist(self.store.reschedule, again, self.owner, self._wake_msg())
        return "deferred" if res == "retried" else res

    def clear_failed(self, lock_keys: set[str]) -> int:
        """Delete the dead letters of ``lock_keys``: a later run (or a reconcile) brought those keys in
        sync, so their failures no longer describe anything wrong. Looks the dead letters up in a
        listing at most :data:`FAILED_INDEX_SECS` old, so a busy queue pays for it rarely."""
        index = self._failed_index()
        n = 0
        for key in lock_keys & index.keys():
            for storage_key in index.pop(key):
                if self._call(self.store.delete, storage_key, "failed"):
                    n += 1
                    log.info("dead letter %s (lock_key=%s) cleared: the key is in sync again", storage_key, key)
        return n

    def _failed_index(self) -> dict[str, list[str]]:
        with self._index_lock:
            at, index = self._failed
            if time.monotonic() - at < FAILED_INDEX_SECS:
                return index
            index = {}
            if self._call(self.store.count_failed, 1):
                after = None
                while True:
                    rows, more = self._call(self.store.list, "failed", after, 1000)
                    for env, _ in rows:
                        index.setdefault(env.lock_key, []).append(env.storage_key)
                    if not more or not rows:
                        break
                    after = rows[-1][0].storage_key
            self._failed = (time.monotonic(), index)
            return index

    def apply_config(self, cfg) -> None:
        """A reloaded configuration: handlers and retry settings use it from the next job on."""
        self.cfg = cfg
        self.qcfg = queue_config(cfg, self.name)
        self.context.cfg = cfg

    def heartbeat(self) -> int:
        return self.store.heartbeat(self.owner, time.time() + self.lease_secs)

    def reclaim(self) -> int:
        """Give the jobs of dead owners another run (or dead-letter them when out of attempts)."""
        now = time.time()
        n = 0
        for job, owner, lease in self.store.running():
            if owner == self.owner:
                continue
            dead = owner_is_dead_here(owner)
            if dead or lease < now:
                why = "the worker running this job stopped before it finished (process died or lease expired)"
                # An expired lease is only taken over if it is still expired when we write.
                outcome = self._fail(job, owner, why, terminal=False, lease_before=NO_LEASE_CHECK if dead else now)
                if outcome == "lost":
                    continue  # its owner renewed the lease meanwhile, or another worker reclaimed it
                m.JOB_RUNS.labels(self.name, "lost").inc()
                log.warning("job %s of %s reclaimed: %s", job.storage_key, owner, outcome)
                n += 1
        return n

    def top_up(self) -> int:
        return self.store.top_up(time.time(), self._wake_msg())

    # ------------------------------------------------------------ admin and gauges

    def list_pending(self, after: str | None = None, n: int = 100) -> tuple[list[dict], str | None]:
        rows, more = self._call(self.store.list, "pending", after, n)
        return [env.describe(state) for env, state in rows], (rows[-1][0].storage_key if more and rows else None)

    def list_failed(self, after: str | None = None, n: int = 100) -> tuple[list[dict], str | None]:
        rows, more = self._call(self.store.list, "failed", after, n)
        return [env.describe(state) for env, state in rows], (rows[-1][0].storage_key if more and rows else None)

    def get(self, storage_key: str) -> tuple[Envelope, str] | None:
        return self._call(self.store.get, storage_key)

    def delete_pending(self, storage_key: str) -> bool:
        return self._call(self.store.delete, storage_key, "pending")

    def delete_failed(self, storage_key: str) -> bool:
        return self._call(self.store.delete, storage_key, "failed")

    def retry_failed(self, storage_key: str) -> bool:
        return self._call(self.store.retry_failed, storage_key, time.time(), self._wake_msg())

    def lock_keys(self, state: str, cap: int = SATURATION) -> list[tuple[str, float]]:
        """(lock_key, created_at) of up to ``cap`` jobs, oldest first: ``pending`` (pending and running)
        or ``failed``. Cheap: no job bodies are parsed (what per-downstream gauges are computed from)."""
        rows = self._call(self.store.lock_keys, state, cap)
        return [(lk, created_at_of(sk)) for lk, sk in rows]

    def counts(self, cap: int = SATURATION) -> tuple[int, int]:
        """(pending, failed) jobs, each counted up to ``cap`` (``cap`` means "at least"): the same
        cheap counters as the gauges, but every pending job however far off its next run."""
        pending = self._call(self.store.count_pending, float("inf"), cap)
        failed = self._call(self.store.count_failed, cap)
        return pending, failed

    def refresh_gauges(self) -> tuple[int, int]:
        horizon = time.time() + self.qcfg.pending_ready_horizon_secs
        pending = self._call(self.store.count_pending, horizon, SATURATION)
        failed = self._call(self.store.count_failed, SATURATION)
        m.JOB_QUEUE_PENDING.labels(self.name).set(pending)
        m.JOB_QUEUE_FAILED.labels(self.name).set(failed)
        return pending, failed

    def close(self) -> None:
        self.store.close()


def _native(fn):
    import gevent

    return gevent.get_hub().threadpool.apply(fn)


def _persist(fn, *args):
    """Record a job's outcome, riding out a briefly locked database or a Redis failover."""
    for attempt in range(10):
        try:
            return fn(*args)
        except Exception as exc:  # noqa: BLE001 - retried, then re-raised
            if attempt == 9:
                raise
            # One line per outcome (a traceback only for what is not a plain outage), then quiet retries.
            log.log(logging.WARNING if attempt == 0 else logging.DEBUG, "recording a job outcome failed; "
                    "retrying: %s", one_line(exc), exc_info=not is_unreachable(exc))
            time.sleep(0.2 * (attempt + 1))


def _backend_name(cfg, qcfg) -> str:
    """How outage reports name this queue's backend (never a password)."""
    if qcfg.backend == "redis":
        return f"Redis at {redis_address(qcfg.url)}"  # the same name as angos.outage.redis_outage
    if jobs_on_s3(cfg):
        s3 = cfg.metadata.s3
        return f"S3 bucket {s3.bucket}" + (f" at {s3.endpoint}" if s3.endpoint else "")  # as s3_outage names it
    return f"the job queue database in {jobs_dir(cfg)}"


def _describe(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= 2000 else text[:2000] + "…"


class JobQueues:
    """Every queue of one configuration, opened on first use (one per process)."""

    def __init__(self, cfg):
        self.cfg = cfg
        self._queues: dict[str, JobQueue] = {}
        self._lock = threading.Lock()
        for name in QUEUES:
            # At 0 from the start: a rate() alert sees the first failure only if the series was there before it.
            m.JOB_QUEUE_ENQUEUE_FAILURES.labels(name)

    def __getitem__(self, name: str) -> JobQueue:
        if name not in QUEUES:
            raise KeyError(name)
        with self._lock:
            q = self._queues.get(name)
            if q is None:
                q = self._queues[name] = JobQueue(self.cfg, name)
                q.siblings = self._queues
            return q

    def enqueue(self, queue: str, kind: str, lock_key: str, payload: dict | None = None, delay: float = 0.0,
                max_attempts: int | None = None) -> bool:
        """Never raises (see :meth:`JobQueue.enqueue`)."""
        try:
            q = self[queue]
        except Exception:  # noqa: BLE001 - opening the store failed: count it like any enqueue failure
            m.JOB_QUEUE_ENQUEUE_FAILURES.labels(queue).inc()
            log.exception("cannot open job queue %s", queue)
            return False
        return q.enqueue(kind, lock_key, payload, delay, max_attempts)
