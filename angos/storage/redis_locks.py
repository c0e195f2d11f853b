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
The outage is logged once, and its end once (:mod:`angos.outage`).
"""

from __future__ import annotations

from ..outage import redis_outage
from .locks import LeasedLocks

_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""
_RENEW = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) end
return 0
"""


class RedisLocks(LeasedLocks):
    backend = "redis"
    service = "redis lock backend"

    def __init__(self, cfg, client=None):
        import redis

        super().__init__(cfg)
        self.ttl_ms = int(cfg.ttl * 1000)
        self.prefix = cfg.key_prefix
        self.renew_interval = max(self.ttl_ms / 3000, 0.05)
        self.unavailable_errors = (redis.ConnectionError, redis.TimeoutError)
        self.outage = redis_outage(cfg.url)
        self._client = client or redis.Redis.from_url(cfg.url, socket_connect_timeout=2, socket_timeout=5,
                                                      health_check_interval=30)
        self._release_script = self._client.register_script(_RELEASE)
        self._renew_script = self._client.register_script(_RENEW)

    def _key(self, name: str) -> str:
        return f"{self.prefix}:{name}"

    def _try_acquire(self, key: str, token: str):
        return True if self._client.set(key, token, nx=True, px=self.ttl_ms) else None

    def _renew(self, key: str, token: str, handle):
        return True if self._renew_script(keys=[key], args=[token, self.ttl_ms]) else None

    def _release(self, key: str, token: str, handle) -> None:
        self._release_script(keys=[key], args=[token])

    def check(self) -> None:
        try:
            self._client.ping()
        except self.unavailable_errors as exc:
            raise self._unavailable(exc) from None
