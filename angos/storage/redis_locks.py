"""Redis lock strategy: exclusive named locks shared by every box that uses the same Redis.

Acquire is ``SET <prefix>:<name> <token> NX PX <ttl>``, retried up to
``max_retries`` times ``retry_delay_ms`` apart (with jitter, so waiters do not
move in lock step). While held, a background renewer (a thread, i.e. a
greenlet once gevent has patched the process) extends the TTL every third of
it, so a long read-modify-write never loses its lock; a holder that dies stops
renewing and its lock expires after ``ttl`` seconds. Release and renewal are
compare-and-act Lua scripts keyed on the holder's random token, so a holder
whose lock already expired can never delete or extend somebody else's.

Greenlets of one process first queue on a process-local lock, so Redis only
sees contention between processes.

Redis unreachable: acquisition raises :class:`angos.oci.errors.Unavailable`
(HTTP 503) before anything is written; ``check()`` (``/readyz``) raises too.
"""

from __future__ import annotations

import contextlib
import logging
import random
import threading
import time
import uuid

from ..oci.errors import Unavailable
from .locks import LockManager, LockTimeout, MemoryLocks

log = logging.getLogger("angos.storage.redis_locks")

_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""
_RENEW = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) end
return 0
"""


class RedisLocks(LockManager):
    backend = "redis"

    def __init__(self, cfg, client=None):
        import redis

        self.cfg = cfg
        self.ttl_ms = int(cfg.ttl * 1000)
        self.prefix = cfg.key_prefix
        self._redis_errors = (redis.ConnectionError, redis.TimeoutError)
        self._client = client or redis.Redis.from_url(cfg.url, socket_connect_timeout=2, socket_timeout=5,
                                                      health_check_interval=30)
        self._release = self._client.register_script(_RELEASE)
        self._renew = self._client.register_script(_RENEW)
        self._local = MemoryLocks(timeout=max(60.0, cfg.max_retries * cfg.retry_delay_ms / 1000 * 4),
                                  instrument=False)

    def _key(self, name: str) -> str:
        return f"{self.prefix}:{name}"

    def _unavailable(self, exc) -> Unavailable:
        return Unavailable(f"redis lock backend unreachable: {exc}")

    @contextlib.contextmanager
    def lock(self, name: str):
        key = self._key(name)
        with self._local.lock(key):
            token = uuid.uuid4().hex
            started = time.monotonic()
            self._acquire(name, key, token, started)
            stop = threading.Event()
            renewer = threading.Thread(target=self._keep_alive, args=(key, token, stop), daemon=True,
                                       name=f"lock-renew:{name}")
            renewer.start()
            try:
                yield
            finally:
                stop.set()
                try:
                    self._release(keys=[key], args=[token])
                except self._redis_errors as exc:
                    # The lock expires on its own after ttl; nothing else to do.
                    log.warning("could not release lock %s: %s", name, exc)

    def _acquire(self, name: str, key: str, token: str, started: float) -> None:
        delay = self.cfg.retry_delay_ms / 1000
        for attempt in range(self.cfg.max_retries + 1):
            try:
                if self._client.set(key, token, nx=True, px=self.ttl_ms):
                    self._acquired(started, True)
                    return
            except self._redis_errors as exc:
                self._record_error(started)
                raise self._unavailable(exc) from None
            if attempt < self.cfg.max_retries:
                time.sleep(delay * random.uniform(0.5, 1.5))
        self._acquired(started, False)
        raise LockTimeout(f"lock {name!r} still held elsewhere after {self.cfg.max_retries} retries")

    def _record_error(self, started: float) -> None:
        from .. import metrics as m

        m.LOCK_ACQUISITIONS.labels(self.backend, "error").inc()
        m.LOCK_DURATION.labels(self.backend).observe((time.monotonic() - started) * 1000)

    def _keep_alive(self, key: str, token: str, stop: threading.Event) -> None:
        interval = max(self.ttl_ms / 3000, 0.05)
        while not stop.wait(interval):
            try:
                if not self._renew(keys=[key], args=[token, self.ttl_ms]):
                    log.error("lock %s was lost before its holder finished (expired or taken over)", key)
                    return
            except self._redis_errors as exc:
                log.warning("could not renew lock %s: %s", key, exc)

    def check(self) -> None:
        try:
            self._client.ping()
        except self._redis_errors as exc:
            raise self._unavailable(exc) from None
