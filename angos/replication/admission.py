"""Which replication jobs may run now: a per-downstream share of the pool and a circuit breaker.

One :class:`Admission` per draining process. Before a job talks to its
downstream it calls :meth:`Admission.enter`, which either admits it (the job
then calls :meth:`leave` when done) or raises
:class:`~angos.queue.kinds.DeferJob`, which puts the job back to pending
without counting an attempt and frees the pool slot at once:

- **Share**: a downstream may hold at most ``max_concurrent_jobs`` of the
  pool (default: the pool divided evenly among the configured downstreams,
  rounded up, so a lone downstream may use all of it), so a slow or hung
  downstream cannot take every slot. A job over the share is deferred for
  about as long as the downstream's jobs take (at least 50 ms); while it
  completes nothing the delay grows with the time since its last completion
  (up to ``outage_probe_max_ms``), so a hung downstream's backlog costs few
  claims and a busy healthy one's is picked up as slots free.
- **Outage**: a refused connection, a timeout, a 5xx, 408 or 429 marks the
  downstream *down* (:meth:`trip`). Its jobs are deferred to the next probe
  time; the first job due after it runs one cheap probe (``GET /v2/`` with
  ``probe_timeout_secs``), and if the downstream answers it is *up* again and
  the job goes ahead, and so do the deferred ones as they come due. Probe
  intervals double from ``outage_probe_min_ms`` up to ``outage_probe_max_ms``
  (a 429's ``Retry-After`` is honoured, capped there too), so a downstream is
  back in use within seconds of its return, after an outage of any length.

State is per process (each ``angos worker`` probes for itself); it is kept
only in memory, so a restarted drain starts with every downstream up. The
transitions are also reported to ``on_down(name, since, reason)`` and
``on_up(name)`` (the handler records them for the status API), outside the
admission lock.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from dataclasses import dataclass
from typing import Callable

from .. import metrics as m
from ..queue.kinds import DeferJob

log = logging.getLogger("angos.replication.admission")

SHARE_DEFER_MIN = 0.05


@dataclass
class _State:
    running: int = 0
    down_since: float | None = None     # wall clock, for messages
    next_probe: float = 0.0             # monotonic
    failures: int = 0                   # failed probes since the downstream went down
    probing: bool = False
    last_done: float = 0.0              # monotonic time this downstream last finished a job
    job_secs: float = 0.05              # moving average of its job durations
    reason: str = ""


def share(ds, pool: int, downstreams: int = 1) -> int:
    """How many jobs ``ds`` may run at once in a pool of ``pool`` shared by ``downstreams``."""
    return ds.max_concurrent_jobs or max(1, -(-pool // max(1, downstreams)))


class Admission:
    def __init__(self, settings: Callable, pool: Callable[[], int], downstreams: Callable[[], int] = lambda: 1,
                 on_down: Callable[[str, float, str], None] | None = None,
                 on_up: Callable[[str], None] | None = None):
        """``settings()`` returns the current ``[global.replication]``, ``pool()`` the pool size and
        ``downstreams()`` how many distinct downstreams the configuration lists."""
        self.settings = settings
        self.pool = pool
        self.downstreams = downstreams
        self.on_down = on_down or (lambda name, since, reason: None)
        self.on_up = on_up or (lambda name: None)
        self._states: dict[tuple, _State] = {}
        self._lock = threading.Lock()

    def _state(self, key) -> _State:
        st = self._states.get(key)
        if st is None:
            st = self._states[key] = _State()
        return st

    def _interval(self, failures: int) -> float:
        s = self.settings()
        return min(s.outage_probe_min_ms * (2 ** min(failures, 30)), s.outage_probe_max_ms) / 1000.0

    def is_down(self, key) -> bool:
        with self._lock:
            return self._state(key).down_since is not None

    def outage(self, key) -> tuple[float, str] | None:
        """(Unix time the downstream went down, why), or None while it is up."""
        with self._lock:
            st = self._state(key)
            return None if st.down_since is None else (st.down_since, st.reason)

    def enter(self, key, ds, probe: Callable[[], str | None]) -> None:
        """Admit a job for downstream ``key`` or raise DeferJob. ``probe()`` returns None when the
        downstream answers, else why not."""
        name = key[0]
        with self._lock:
            st = self._state(key)
            now = time.monotonic()
            if st.down_since is not None:
                if now < st.next_probe:
                    raise DeferJob(st.next_probe - now + random.uniform(0, 0.05),
                                   f"downstream {name} is down ({st.reason}); next probe in {st.next_probe - now:.1f}s")
                if st.probing:
                    raise DeferJob(0.2, f"downstream {name} is being probed")
                st.probing = True
            elif st.running >= share(ds, self.pool(), self.downstreams()):
                idle = now - st.last_done if st.last_done else 0.0
                delay = min(max(SHARE_DEFER_MIN, st.job_secs, idle), self.settings().outage_probe_max_ms / 1000.0)
                raise DeferJob(delay, f"downstream {name} already runs {st.running} job(s), its share of the pool")
            else:
                st.running += 1
                return
        why = None
        try:
            why = probe()
        except Exception as exc:  # noqa: BLE001 - a probe that fails in any way means "still down"
            why = f"{type(exc).__name__}: {exc}"
        with self._lock:
            st.probing = False
            if why is not None:
                st.failures += 1
                st.reason = why
                st.next_probe = time.monotonic() + self._interval(st.failures)
                log.info("downstream %s still down: %s; next probe in %.1fs", name, why,
                         st.next_probe - time.monotonic())
                raise DeferJob(st.next_probe - time.monotonic(), f"downstream {name} is down ({why})")
            log.warning("downstream %s is back after %.1fs down; resuming its jobs", name,
                        time.time() - (st.down_since or time.time()))
            st.down_since, st.failures, st.reason, st.last_done = None, 0, "", time.monotonic()
            m.REPLICATION_DOWNSTREAM_UP.labels(name).set(1)
            st.running += 1
        self.on_up(name)

    def leave(self, key, finished: bool = True, took: float | None = None) -> None:
        with self._lock:
            st = self._state(key)
            st.running = max(0, st.running - 1)
            if finished:
                st.last_done = time.monotonic()
                if took is not None:
                    st.job_secs = 0.8 * st.job_secs + 0.2 * took

    def trip(self, key, reason: str, retry_after: float | None = None) -> float:
        """Mark the downstream down after an outage-class failure; returns the delay to defer by."""
        name = key[0]
        went_down = None
        with self._lock:
            st = self._state(key)
            now = time.monotonic()
            if st.down_since is None:
                st.down_since, st.failures = time.time(), 0
                went_down = st.down_since
                log.warning("downstream %s is down: %s; its jobs wait (probing every %.1f-%.1fs)", name, reason,
                            self._interval(0), self._interval(60))
                m.REPLICATION_DOWNSTREAM_UP.labels(name).set(0)
            st.reason = reason
            delay = self._interval(st.failures)
            if retry_after is not None:
                delay = min(max(delay, retry_after), self.settings().outage_probe_max_ms / 1000.0)
            st.next_probe = max(st.next_probe, now + delay)
            wait = st.next_probe - now
        if went_down is not None:
            self.on_down(name, went_down, reason)
        return wait
