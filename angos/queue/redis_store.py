"""Job state in Redis, next to the queue's Huey keys.

Every state change is one Lua script, so it is atomic across processes and
hosts (Redis runs scripts one at a time). Keys, with ``P = angos:jobs:<queue>:``:

==================  =====  ==================================================
``P body``          hash   storage_key → envelope JSON
``P state``         hash   storage_key → pending | running | failed
``P lk``            hash   storage_key → lock_key
``P owner``         hash   storage_key → owner of a running job
``P plock``         hash   lock_key → storage_key of its pending job (HSETNX:
                           the atomic put-if-absent that coalesces enqueues)
``P rlock``         hash   lock_key → storage_key of its running job
``P due``           zset   pending storage_key by not_before
``P running``       zset   running storage_key by lease expiry
``P active``        zset   pending + running keys, lexicographic (listing)
``P failed``        zset   failed keys, lexicographic (listing)
==================  =====  ==================================================

A wake-up for Huey is pushed (due now) or scheduled (later) by the same
script that makes a job runnable. Due times use the Redis server's clock
(``TIME``), so producers and claims on different hosts agree on what is due;
callers pass delays. The last script argument is the offset between unix time
and Huey's schedule clock (naive UTC read as local time).
"""

from __future__ import annotations

import time

from .envelope import Envelope
from .sqlite_store import NO_LEASE_CHECK, huey_timestamp


def _offset() -> float:
    now = time.time()
    return huey_timestamp(now) - now

_LIB = """
local P = ARGV[1]
-- One clock for due times: the Redis server's. Stamps and claims then agree even when the
-- producer's clock or its scheduling lags (a claim can never miss a job committed before it).
local T = redis.call('TIME')
local NOW = tonumber(T[1]) + tonumber(T[2]) / 1000000
local function wake(msg, at)
  if tonumber(at) <= NOW then
    redis.call('lpush', KEYS[1], msg)
  else
    redis.call('zadd', KEYS[2], tonumber(at) + tonumber(ARGV[#ARGV]), msg)
  end
end
local function set_pending(sk, lk, body, not_before)
  redis.call('hset', P..'body', sk, body)
  redis.call('hset', P..'state', sk, 'pending')
  redis.call('hset', P..'lk', sk, lk)
  redis.call('hdel', P..'owner', sk)
  redis.call('zrem', P..'running', sk)
  redis.call('zadd', P..'due', not_before, sk)
  redis.call('zadd', P..'active', 0, sk)
end
local function forget(sk)
  redis.call('hdel', P..'body', sk)
  redis.call('hdel', P..'state', sk)
  redis.call('hdel', P..'lk', sk)
  redis.call('hdel', P..'owner', sk)
  redis.call('zrem', P..'running', sk)
  redis.call('zrem', P..'due', sk)
  redis.call('zrem', P..'active', sk)
  redis.call('zrem', P..'failed', sk)
end
local function release_running(sk, lk)
  if redis.call('hget', P..'rlock', lk) == sk then redis.call('hdel', P..'rlock', lk) end
end
local function wake_same_key(lk, msg)
  local other = redis.call('hget', P..'plock', lk)
  if other then
    local nb = redis.call('zscore', P..'due', other)
    if nb then wake(msg, nb) end
  end
end
local function owned(sk, owner, before)
  if redis.call('hget', P..'state', sk) ~= 'running' or redis.call('hget', P..'owner', sk) ~= owner then
    return false
  end
  return before == nil or tonumber(redis.call('zscore', P..'running', sk)) < tonumber(before)
end
"""

# ARGV: P, sk, lk, body, delay, msg, tz_offset
_ADD = _LIB + """
if redis.call('hsetnx', P..'plock', ARGV[3], ARGV[2]) == 0 then return 0 end
local due = NOW + tonumber(ARGV[5])
set_pending(ARGV[2], ARGV[3], ARGV[4], due)
wake(ARGV[6], due)
return 1
"""

# ARGV: P, owner, lease_until
_CLAIM = _LIB + """
local offset = 0
while true do
  local batch = redis.call('zrangebyscore', P..'due', '-inf', NOW, 'LIMIT', offset, 64)
  if #batch == 0 then return false end
  for _, sk in ipairs(batch) do
    local lk = redis.call('hget', P..'lk', sk)
    if redis.call('hexists', P..'rlock', lk) == 0 then
      redis.call('zrem', P..'due', sk)
      if redis.call('hget', P..'plock', lk) == sk then redis.call('hdel', P..'plock', lk) end
      redis.call('hset', P..'rlock', lk, sk)
      redis.call('hset', P..'state', sk, 'running')
      redis.call('hset', P..'owner', sk, ARGV[2])
      redis.call('zadd', P..'running', ARGV[3], sk)
      return redis.call('hget', P..'body', sk)
    end
  end
  offset = offset + #batch
end
"""

# ARGV: P, sk, lk, owner, msg, tz_offset
_COMPLETE = _LIB + """
local ok = owned(ARGV[2], ARGV[4])
if ok then
  release_running(ARGV[2], ARGV[3])
  forget(ARGV[2])
end
wake_same_key(ARGV[3], ARGV[5])
if ok then return 1 else return 0 end
"""

# ARGV: P, sk, lk, owner, lease_before, body, delay, msg, tz_offset
_RESCHEDULE = _LIB + """
if not owned(ARGV[2], ARGV[4], ARGV[5]) then return 'lost' end
release_running(ARGV[2], ARGV[3])
if redis.call('hsetnx', P..'plock', ARGV[3], ARGV[2]) == 0 then
  forget(ARGV[2])
  wake_same_key(ARGV[3], ARGV[8])
  return 'folded'
end
local due = NOW + tonumber(ARGV[7])
set_pending(ARGV[2], ARGV[3], ARGV[6], due)
wake(ARGV[8], due)
return 'retried'
"""

# ARGV: P, sk, lk, owner, lease_before, body, msg, tz_offset
_DEAD = _LIB + """
local ok = owned(ARGV[2], ARGV[4], ARGV[5])
if ok then
  release_running(ARGV[2], ARGV[3])
  redis.call('hset', P..'body', ARGV[2], ARGV[6])
  redis.call('hset', P..'state', ARGV[2], 'failed')
  redis.call('hdel', P..'owner', ARGV[2])
  redis.call('zrem', P..'running', ARGV[2])
  redis.call('zrem', P..'active', ARGV[2])
  redis.call('zadd', P..'failed', 0, ARGV[2])
end
wake_same_key(ARGV[3], ARGV[7])
if ok then return 1 else return 0 end
"""

# ARGV: P, owner, lease_until
_HEARTBEAT = _LIB + """
local n = 0
for _, sk in ipairs(redis.call('zrange', P..'running', 0, -1)) do
  if redis.call('hget', P..'owner', sk) == ARGV[2] then
    redis.call('zadd', P..'running', ARGV[3], sk)
    n = n + 1
  end
end
return n
"""

# ARGV: P, sk, state
_DELETE = _LIB + """
if redis.call('hget', P..'state', ARGV[2]) ~= ARGV[3] then return 0 end
local lk = redis.call('hget', P..'lk', ARGV[2])
if ARGV[3] == 'pending' and redis.call('hget', P..'plock', lk) == ARGV[2] then redis.call('hdel', P..'plock', lk) end
forget(ARGV[2])
return 1
"""

# ARGV: P, sk, body, msg, tz_offset
_RETRY_FAILED = _LIB + """
if redis.call('hget', P..'state', ARGV[2]) ~= 'failed' then return 0 end
local lk = redis.call('hget', P..'lk', ARGV[2])
if redis.call('hsetnx', P..'plock', lk, ARGV[2]) == 0 then
  forget(ARGV[2])
  wake_same_key(lk, ARGV[4])
  return 1
end
redis.call('zrem', P..'failed', ARGV[2])
set_pending(ARGV[2], lk, ARGV[3], NOW)
wake(ARGV[4], NOW)
return 1
"""

# ARGV: P, msg, cap
_TOP_UP = _LIB + """
local claimable = 0
for _, sk in ipairs(redis.call('zrangebyscore', P..'due', '-inf', NOW, 'LIMIT', 0, tonumber(ARGV[3]))) do
  if redis.call('hexists', P..'rlock', redis.call('hget', P..'lk', sk)) == 0 then claimable = claimable + 1 end
end
local missing = claimable - redis.call('llen', KEYS[1])
for _ = 1, missing do redis.call('lpush', KEYS[1], ARGV[2]) end
if missing < 0 then return 0 end
return missing
"""


class RedisJobStore:
    def __init__(self, conn, queue: str, huey_queue_key: str, huey_schedule_key: str):
        self.conn = conn
        self.prefix = f"angos:jobs:{queue}:"
        self.keys = [huey_queue_key, huey_schedule_key]
        self._scripts = {name: conn.register_script(src) for name, src in (
            ("add", _ADD), ("claim", _CLAIM), ("complete", _COMPLETE), ("reschedule", _RESCHEDULE),
            ("dead", _DEAD), ("heartbeat", _HEARTBEAT), ("delete", _DELETE), ("retry_failed", _RETRY_FAILED),
            ("top_up", _TOP_UP))}

    def _run(self, name: str, *args):
        return self._scripts[name](keys=self.keys, args=[self.prefix, *args])

    def close(self) -> None:
        pass

    def add(self, env: Envelope, wake: bytes) -> bool:
        delay = max(env.not_before - env.created_at, 0.0)
        return self._run("add", env.storage_key, env.lock_key, env.to_json(), delay, wake, _offset()) == 1

    def claim_next(self, owner: str, now: float, lease_until: float) -> Envelope | None:
        body = self._run("claim", owner, lease_until)
        return Envelope.from_json(body) if body else None

    def complete(self, env: Envelope, owner: str, wake: bytes) -> bool:
        return self._run("complete", env.storage_key, env.lock_key, owner, wake, _offset()) == 1

    def reschedule(self, env: Envelope, owner: str, wake: bytes, lease_before: float = NO_LEASE_CHECK) -> str:
        delay = max(env.not_before - time.time(), 0.0)
        res = self._run("reschedule", env.storage_key, env.lock_key, owner, lease_before, env.to_json(), delay,
                        wake, _offset())
        return res.decode() if isinstance(res, bytes) else res

    def dead_letter(self, env: Envelope, owner: str, wake: bytes, lease_before: float = NO_LEASE_CHECK) -> bool:
        return self._run("dead", env.storage_key, env.lock_key, owner, lease_before, env.to_json(), wake,
                         _offset()) == 1

    def heartbeat(self, owner: str, lease_until: float) -> int:
        return self._run("heartbeat", owner, lease_until)

    def running(self) -> list[tuple[Envelope, str, float]]:
        p = self.prefix
        out = []
        for sk, lease in self.conn.zrange(p + "running", 0, -1, withscores=True):
            body, owner = self.conn.hget(p + "body", sk), self.conn.hget(p + "owner", sk)
            if body is not None and owner is not None:
                out.append((Envelope.from_json(body), owner.decode(), lease))
        return out

    def list(self, state: str, after: str | None, n: int) -> tuple[list[tuple[Envelope, str]], bool]:
        p = self.prefix
        index = p + ("active" if state == "pending" else "failed")
        start = f"({after}" if after else "-"
        keys = self.conn.zrange(index, start, "+", bylex=True, offset=0, num=n + 1)
        out = []
        for sk in keys[:n]:
            body, st = self.conn.hget(p + "body", sk), self.conn.hget(p + "state", sk)
            if body is not None and st is not None:
                out.append((Envelope.from_json(body), st.decode()))
        return out, len(keys) > n

    def get(self, storage_key: str) -> tuple[Envelope, str] | None:
        body = self.conn.hget(self.prefix + "body", storage_key)
        st = self.conn.hget(self.prefix + "state", storage_key)
        return (Envelope.from_json(body), st.decode()) if body is not None and st is not None else None

    def delete(self, storage_key: str, state: str) -> bool:
        return self._run("delete", storage_key, state) == 1

    def retry_failed(self, storage_key: str, now: float, wake: bytes) -> bool:
        found = self.get(storage_key)
        if found is None or found[1] != "failed":
            return False
        env = found[0].with_(attempts=0, not_before=now, failed_at=None)
        return self._run("retry_failed", storage_key, env.to_json(), wake, _offset()) == 1

    def count_pending(self, horizon: float, cap: int) -> int:
        return min(self.conn.zcount(self.prefix + "due", "-inf", horizon), cap)

    def lock_keys(self, state: str, cap: int) -> list[tuple[str, str]]:
        """(lock_key, storage_key) of up to ``cap`` jobs, oldest first (the indexes sort storage keys,
        which start with the creation time): ``pending`` (pending and running) or ``failed``."""
        p = self.prefix
        keys = self.conn.zrange(p + ("active" if state == "pending" else "failed"), 0, cap - 1)
        out = []
        for i in range(0, len(keys), 1000):
            chunk = keys[i:i + 1000]
            for sk, lk in zip(chunk, self.conn.hmget(p + "lk", chunk)):
                if lk is not None:
                    out.append((lk.decode(), sk.decode()))
        return out

    def count_failed(self, cap: int) -> int:
        return min(self.conn.zcard(self.prefix + "failed"), cap)

    def top_up(self, now: float, wake: bytes, cap: int = 100) -> int:
        return self._run("top_up", wake, cap)
