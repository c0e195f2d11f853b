"""Who may spend argon2 time: per-source failure throttling and a bounded, prioritised queue.

Role: keep wrong passwords from starving right ones in :mod:`angos.auth.basic`.
Argon2 costs tens of milliseconds of CPU and 64 MiB per check by design, so a
flood of guesses could otherwise occupy every check slot (and the CPU) while
real users wait behind it.

Contract:

- :class:`FailureThrottle` keeps, per source (the client address the access
  policy sees as ``identity.client_ip``), a bucket of ``burst`` failures that
  refills at ``burst`` per ``window`` seconds. ``retry_after(source)`` is 0
  while the source may try another uncached check, otherwise the seconds
  until it may; ``failed(source)`` spends one; ``suspect(source)`` is True
  while the source has failures not yet refilled. Memory is bounded
  (``max_sources``; the least recently failing sources are forgotten first,
  and a full bucket is not stored at all).
- :class:`VerificationQueue` runs at most ``parallel`` checks at once and lets
  at most ``max_waiting`` more wait. Waiting *clean* checks run before
  *suspect* ones, first come first served within each lane; the caller
  decides which is which (:mod:`angos.auth.basic`: suspect when the source or
  the username has recent failures) and ``demote(key)`` moves waiting clean
  checks about a source or username that just failed to the suspect lane, so
  the burst that starts a flood does not keep the clean lane full.
  When the waiting room is full a suspect check is refused at once, and a
  clean one takes the place of the newest waiting suspect check (which is
  refused) or is refused when every waiting check is clean. A refusal raises
  :class:`Busy` (answered ``429 TOOMANYREQUESTS``), never after the check ran.
- Of the ``parallel`` slots, suspect checks may hold all but one (when
  ``parallel`` is 2 or more): a clean check never waits for a slot behind
  suspect ones.
- Under gevent the checks run on the queue's own native threads (argon2-cffi
  releases the GIL), created on first use (never in a process that forks
  later) at a lower CPU priority: nice 5 for clean checks, 19 for suspect
  ones. Serving other requests, cached logins included, keeps the CPU when
  it needs it, and a clean check gets it before suspect ones. Without gevent
  (tests, tools) a check runs in the calling thread.
"""

from __future__ import annotations

import collections
import math
import os
import threading
import time
from typing import Callable

from ..native import under_gevent

NICE = 5  # clean checks
NICE_SUSPECT = 19  # checks for sources or usernames with recent failures


class Busy(Exception):
    """No argon2 check now: the source is throttled or the queue is full."""

    def __init__(self, message: str, retry_after: float):
        super().__init__(message)
        self.retry_after = max(1, math.ceil(retry_after))


class FailureThrottle:
    def __init__(self, burst: int, window: float, max_sources: int = 10_000, clock=time.monotonic):
        self.burst = burst
        self.rate = burst / window  # tokens per second
        self.max_sources = max_sources
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # source -> (tokens, at), most recent failure last
        self._lock = threading.Lock()

    def _tokens(self, source: str, now: float) -> float:
        entry = self._buckets.get(source)
        if entry is None:
            return float(self.burst)
        tokens, at = entry
        return min(self.burst, tokens + (now - at) * self.rate)

    def retry_after(self, source: str | None) -> float:
        tokens = self._tokens(source or "", self._clock())
        return 0.0 if tokens >= 1 else (1 - tokens) / self.rate

    def suspect(self, source: str | None) -> bool:
        return self._tokens(source or "", self._clock()) < self.burst

    def failed(self, source: str | None) -> None:
        key, now = source or "", self._clock()
        with self._lock:
            tokens = max(self._tokens(key, now) - 1, 0.0)
            self._buckets.pop(key, None)
            self._buckets[key] = (tokens, now)
            while len(self._buckets) > self.max_sources:
                del self._buckets[next(iter(self._buckets))]


class _Ticket:
    __slots__ = ("event", "granted", "keys", "suspect")

    def __init__(self, keys: tuple, suspect: bool):
        self.event = threading.Event()
        self.granted = False
        self.keys = keys
        self.suspect = suspect


class VerificationQueue:
    def __init__(self, parallel: int, max_waiting: int):
        self.parallel = parallel
        # One slot is kept for clean checks (when there are two or more): a right password
        # never waits for a slot behind wrong ones, only behind other clean checks.
        self.suspect_slots = max(parallel - 1, 1)
        self.max_waiting = max_waiting
        self._lock = threading.Lock()
        self._running = 0
        self._running_suspect = 0
        self._clean: collections.deque[_Ticket] = collections.deque()
        self._suspect: collections.deque[_Ticket] = collections.deque()
        self._pools: dict[bool, object] = {}
        self._pool_pid = None

    def run(self, fn: Callable, *args, suspect: bool = False, keys: tuple = ()):
        """``fn(*args)`` once a slot is free; :class:`Busy` when refused (see the module docstring).
        ``keys`` name what the check is about (its source, its username) for :meth:`demote`."""
        ticket = self._enter(suspect, keys)
        if not ticket.granted:
            ticket.event.wait()
            if not ticket.granted:
                raise Busy("too many password checks waiting; retry shortly", 1)
        try:
            return self._execute(fn, args, ticket.suspect)
        finally:
            self._leave(ticket)

    @property
    def waiting(self) -> int:
        return len(self._clean) + len(self._suspect)

    def demote(self, key) -> None:
        """A check about ``key`` just failed: waiting clean checks about it queue as suspect now."""
        with self._lock:
            if not self._clean:
                return
            keep = collections.deque()
            for ticket in self._clean:
                if key in ticket.keys:
                    ticket.suspect = True
                    self._suspect.append(ticket)
                else:
                    keep.append(ticket)
            self._clean = keep

    def _enter(self, suspect: bool, keys: tuple) -> _Ticket:
        ticket = _Ticket(keys, suspect)
        with self._lock:
            if self.waiting >= self.max_waiting:
                if suspect or not self._suspect:
                    raise Busy("too many password checks waiting; retry shortly", 1)
                bumped = self._suspect.pop()  # the newest suspect check gives way to a clean one
                bumped.event.set()
            (self._suspect if suspect else self._clean).append(ticket)
            self._dispatch()
        return ticket

    def _leave(self, ticket: _Ticket) -> None:
        with self._lock:
            self._running -= 1
            if ticket.suspect:
                self._running_suspect -= 1
            self._dispatch()

    def _dispatch(self) -> None:
        """Start waiting checks while slots allow: clean ones first (called with the lock held)."""
        while self._running < self.parallel:
            if self._clean:
                ticket = self._clean.popleft()
            elif self._suspect and self._running_suspect < self.suspect_slots:
                ticket = self._suspect.popleft()
                self._running_suspect += 1
            else:
                return
            self._running += 1
            ticket.granted = True
            ticket.event.set()

    def _execute(self, fn: Callable, args: tuple, suspect: bool):
        if not under_gevent():
            return fn(*args)
        if self._pool_pid != os.getpid():
            self._pools, self._pool_pid = {}, os.getpid()
        pool = self._pools.get(suspect)
        if pool is None:
            from gevent.threadpool import ThreadPool

            pool = self._pools[suspect] = ThreadPool(self.suspect_slots if suspect else self.parallel)
        return pool.apply(_niced, (NICE_SUSPECT if suspect else NICE, fn, args))


def _niced(nice: int, fn: Callable, args: tuple):
    # Linux keeps a nice value per thread: lower this pool thread's priority once (argon2's own
    # lane threads inherit it), so the worker's serving thread wins the CPU over every check
    # and a clean check wins it over suspect ones. Each pool keeps to one value.
    if getattr(_thread_state, "nice", None) != nice:
        _thread_state.nice = nice
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)
        except (OSError, AttributeError):
            pass
    return fn(*args)


_thread_state = threading.local()
