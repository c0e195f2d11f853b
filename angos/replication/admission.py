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

- **Idle probes**: a job is not the only way to learn about a downstream.
  The drain's watch (:mod:`.watch`) asks :meth:`claim_probe` about every
  configured downstream: one never looked at yet (at start-up), one that is
  down and due for its next probe, or one that no job or probe has reached
  for ``idle_probe_secs`` is probed the same way, and :meth:`probed` feeds the
  answer to the breaker. So a downstream that was never up reads down within
  ``probe_timeout_secs`` of start-up, and one that comes back while nothing
  waits for it reads up again.

``angos_replication_downstream_up{downstream}`` follows the breaker: 0 while
any downstream of that name is down, 1 once it answered (a job finished or a
probe succeeded), absent until the first look.

State is per process (each ``angos worker`` probes for itself); it is kept
only in memory, so a restarted drain starts knowing nothing and looks again.
The transitions are also reported to ``on_down(name, since, reason)`` and
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
    known: bool = False                 # a job or a probe has told us whether it is up
    last_seen: float = 0.0              # monotonic time a job finished or a probe answered


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

    def _publish(self, name: str) -> None:
        """Set the up gauge of ``name`` from every known state of that name (lock held)."""
        states = [st for k, st in self._states.items() if k[0] == name and st.known]
        if states:
            m.REPLICATION_DOWNSTREAM_UP.labels(name).set(0 if any(st.down_since is not None for st in states) else 1)

    def _back(self, st: _State, name: str) -> None:
        """A probe answered (lock held): the downstream is up."""
        if st.down_since is not None:
            log.warning("downstream %s is back after %.1fs down; resuming its jobs", name,
                        time.time() - st.down_since)
        st.down_since, st.failures, st.reason = None, 0, ""
        st.last_done = st.last_seen = time.monotonic()
        st.known = True
        self._publish(name)

    def _still_down(self, st: _State, name: str, why: str) -> float:
        """A probe failed (lock held): schedule the next one; returns the delay until it."""
        st.failures += 1
        st.reason = why
        st.next_probe = time.monotonic() + self._interval(st.failures)
        # At INFO on the 1st, 2nd, 4th, 8th... failed probe: a downstream down for days (probed
        # by the watch even with no job waiting) does not fill the journal.
        level = logging.INFO if st.failures & (st.failures - 1) == 0 else logging.DEBUG
        log.log(level, "downstream %s still down: %s; next probe in %.1fs", name, why,
                st.next_probe - time.monotonic())
        return st.next_probe - time.monotonic()

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
                raise DeferJob(self._still_down(st, name, why), f"downstream {name} is down ({why})")
            self._back(st, name)
            st.running += 1
        self.on_up(name)

    def leave(self, key, finished: bool = True, took: float | None = None) -> None:
        with self._lock:
            st = self._state(key)
            st.running = max(0, st.running - 1)
            if finished:  # the downstream answered (with success or a rejection)
                st.last_done = st.last_seen = time.monotonic()
                if took is not None:
                    st.job_secs = 0.8 * st.job_secs + 0.2 * took
                if not st.known:
                    st.known = True
                    self._publish(key[0])

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
            st.known = True
            self._publish(name)
            st.reason = reason
            delay = self._interval(st.failures)
            if retry_after is not None:
                delay = min(max(delay, retry_after), self.settings().outage_probe_max_ms / 1000.0)
            st.next_probe = max(st.next_probe, now + delay)
            wait = st.next_probe - now
        if went_down is not None:
            self.on_down(name, went_down, reason)
        return wait

    def claim_probe(self, key, idle: float) -> bool:
        """Whether the watch should probe ``key`` now; if True it must report with :meth:`probed`.

        Yes for a downstream never looked at, one that is down and due for its next probe, and
        one that is up but that no job or probe has reached for ``idle`` seconds. No while a job
        of it runs or another probe is under way (they answer the same question)."""
        with self._lock:
            st = self._state(key)
            now = time.monotonic()
            if st.probing or st.running:
                return False
            if st.down_since is not None:
                due = now >= st.next_probe
            else:
                due = not st.known or now - st.last_seen >= idle
            if due:
                st.probing = True
            return due

    def probed(self, key, why: str | None) -> None:
        """The answer of a probe claimed with :meth:`claim_probe`: None when it answered, else why not."""
        name = key[0]
        went_down = came_back = None
        with self._lock:
            st = self._state(key)
            st.probing = False
            if why is None:
                came_back = st.down_since is not None
                self._back(st, name)
            elif st.down_since is None:
                st.down_since, st.failures, st.reason = time.time(), 0, why
                st.next_probe = time.monotonic() + self._interval(0)
                st.known = True
                log.warning("downstream %s is down: %s; its jobs wait (probing every %.1f-%.1fs)", name, why,
                            self._interval(0), self._interval(60))
                self._publish(name)
                went_down = st.down_since
            else:
                self._still_down(st, name, why)
        if came_back:
            self.on_up(name)
        if went_down is not None:
            self.on_down(name, went_down, why)
