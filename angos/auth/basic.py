"""HTTP Basic authentication against ``[auth.identity.<id>]`` argon2id hashes.

Contract:

- ``BasicAuth(identities)`` validates every identity at construction: a
  password that is not a well-formed argon2id hash, or a username used by two
  identities, raises :class:`~angos.config.ConfigError` naming the key.
- ``verify(header_value)`` takes the ``Authorization`` header's value and
  returns ``(identity_id, username)`` for right credentials or raises
  :class:`BadCredentials` for wrong, unknown or malformed ones. A header in
  another scheme (e.g. ``Bearer``) is a credential this registry cannot
  verify, so it is refused too rather than silently treated as anonymous.
- Argon2 is slow on purpose (tens of milliseconds), so a successful
  verification is remembered for ``ttl`` seconds. The cache key is an
  HMAC-SHA256 of the credentials under a random key made when this object is
  built: the cache never holds a password or a hash an attacker could test
  offline, and rebuilding the object (a config reload) starts empty, so a
  changed or removed identity stops working at once. Failures are never
  cached, so guessing always pays argon2.
- An unknown username is verified against a dummy hash so it takes as long
  as a wrong password (no username probing by timing).
- ``verify(header, source)`` takes the client address too: wrong passwords
  must not starve right ones (:mod:`angos.auth.throttle`). A cached identity
  is answered before any queue or throttle is consulted, so it never waits
  behind uncached checks. An uncached check is refused with :class:`Busy`
  (``429``) without running argon2 when its source has spent its failure
  budget (``[auth] max_failures_per_source`` per ``failure_window``) or when
  the bounded queue is full (``max_parallel_verifications`` running,
  ``max_queued_verifications`` waiting per process). Checks for a source or
  a username with recent failures, or for a username that another check
  with other credentials is already verifying (at most one of them can be
  right), queue behind clean ones. A refusal is held back a second
  (``TARPIT``) so clients ignoring ``Retry-After`` cannot turn cheap 429s
  into a request flood. Concurrent requests with the same credentials share
  one verification and its outcome (single flight).
- Under gevent argon2 runs on the queue's own threads at a lower CPU
  priority (argon2-cffi releases the GIL), so one slow verification does not
  stall every other request the worker is serving. Memory stays bounded: each
  running check needs the hash's memory cost (64 MiB with the defaults
  ``angos argon`` uses).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
import threading
import time

import argon2
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from ..config_auth import AuthConfig
from ..config_values import ConfigError
from .throttle import Busy, FailureThrottle, VerificationQueue

DEFAULT_TTL = 60.0
MAX_CACHE = 10_000
TARPIT = 1.0  # seconds a throttled source waits for its 429


class BadCredentials(Exception):
    """Credentials were presented and are wrong (answer 401)."""


_PHC = re.compile(r"^\$argon2(id|i|d)\$v=(\d+)\$m=(\d+),t=(\d+),p=(\d+)\$([A-Za-z0-9+/]+)\$([A-Za-z0-9+/]+)$")


def _b64_len(text: str) -> int | None:
    """Decoded length of unpadded base64 (as PHC strings use), None when impossible."""
    if len(text) % 4 == 1:
        return None
    try:
        return len(base64.b64decode(text + "=" * (-len(text) % 4), validate=True))
    except (binascii.Error, ValueError):
        return None


def check_hash(where: str, value: str) -> None:
    """Raise ConfigError unless ``value`` is a well-formed argon2id hash (PHC string)."""
    hint = "generate one with `angos argon`"
    m = _PHC.fullmatch(value) if isinstance(value, str) else None
    if m is None:
        raise ConfigError(f"{where}: not an argon2 hash (expected $argon2id$v=19$m=...,t=...,p=...$salt$hash); {hint}")
    if m.group(1) != "id":
        raise ConfigError(f"{where}: expected an argon2id hash, got argon2{m.group(1)}; {hint}")
    salt, tag = _b64_len(m.group(6)), _b64_len(m.group(7))
    if salt is None or salt < 8 or tag is None or tag < 4 or m.group(2) not in ("16", "19"):
        raise ConfigError(f"{where}: malformed argon2id hash (bad version, salt or hash encoding); {hint}")
    try:
        argon2.extract_parameters(value)
    except (InvalidHashError, ValueError) as exc:
        raise ConfigError(f"{where}: malformed argon2id hash ({exc}); {hint}") from None


class _Flight:
    """One verification in progress and its outcome, shared by requests with the same credentials."""

    __slots__ = ("done", "result", "error")

    def __init__(self):
        self.done = threading.Event()
        self.result: tuple[str, str] | None = None
        self.error: Exception | None = None


class BasicAuth:
    def __init__(self, identities: dict, ttl: float = DEFAULT_TTL, limits: AuthConfig | None = None):
        limits = limits or AuthConfig()
        self.ttl = ttl
        self._hasher = argon2.PasswordHasher()
        self._users: dict[str, tuple[str, str]] = {}
        for ident_id, ident in identities.items():
            where = f"auth.identity.{ident_id}"
            if not ident.username:
                raise ConfigError(f"{where}.username: must not be empty")
            check_hash(f"{where}.password", ident.password)
            if ident.username in self._users:
                other = self._users[ident.username][0]
                raise ConfigError(f"{where}.username: {ident.username!r} is also the username of "
                                  f"auth.identity.{other}")
            self._users[ident.username] = (ident_id, ident.password)
        # Same parameters as real hashes, so a miss costs the same time.
        self._dummy = self._hasher.hash(os.urandom(16).hex()) if self._users else None
        self._key = os.urandom(32)
        self._cache: dict[bytes, tuple[float, str, str]] = {}
        self._lock = threading.Lock()
        self._inflight: dict[bytes, _Flight] = {}
        self._checking: dict[str, int] = {}  # username -> uncached checks under way
        self.queue = VerificationQueue(limits.max_parallel_verifications, limits.max_queued_verifications)
        self.throttle = FailureThrottle(limits.max_failures_per_source, limits.failure_window)
        # Per username only to order the queue, never to refuse: refusing would let anyone lock a user out.
        self.user_failures = FailureThrottle(limits.max_failures_per_source, limits.failure_window)

    @property
    def configured(self) -> bool:
        return bool(self._users)

    def verify(self, header: str, source: str | None = None) -> tuple[str, str]:
        """Right credentials → (identity id, username); wrong ones raise BadCredentials, and an
        uncached check that may not run now raises Busy (see the module docstring)."""
        scheme, _, token = header.strip().partition(" ")
        if scheme.lower() != "basic":
            raise BadCredentials(f"unsupported authorization scheme {scheme!r}")
        try:
            decoded = base64.b64decode(token.strip(), validate=True).decode("utf-8")
        except (binascii.Error, ValueError):
            raise BadCredentials("malformed basic credentials") from None
        username, sep, password = decoded.partition(":")
        if not sep:
            raise BadCredentials("malformed basic credentials")
        key = hmac.new(self._key, decoded.encode("utf-8"), hashlib.sha256).digest()
        hit = self._cache.get(key)
        if hit is not None and hit[0] > time.monotonic():
            return hit[1], hit[2]  # before any throttle or queue: cached identities never wait
        wait = self.throttle.retry_after(source)
        if wait:
            _pause(min(wait, TARPIT))
            raise Busy("too many failed logins from this address; retry later", wait)
        # Single flight: concurrent requests with the same credentials (a client
        # opening many connections at once) share one verification and its outcome
        # instead of each running argon2 (64 MiB apiece with the default parameters).
        with self._lock:
            flight = self._inflight.get(key)
            leader = flight is None
            if leader:
                flight = self._inflight[key] = _Flight()
        if not leader:
            flight.done.wait()
            err = flight.error
            if isinstance(err, Busy):
                raise Busy(str(err), err.retry_after)
            if err is not None:
                raise BadCredentials(str(err))
            return flight.result
        try:
            flight.result = self._verify_slow(key, username, password, source)
            return flight.result
        except Busy as exc:
            flight.error = exc
            _pause(TARPIT)
            raise
        except BadCredentials as exc:
            flight.error = exc
            raise
        except BaseException as exc:
            flight.error = BadCredentials("verification failed")
            raise exc
        finally:
            with self._lock:
                del self._inflight[key]
            flight.done.set()

    def _verify_slow(self, key: bytes, username: str, password: str, source: str | None) -> tuple[str, str]:
        entry = self._users.get(username)
        # Checks for a source or a username that failed recently wait behind all others: a flood
        # from many addresses against one account, or from one address against many, is
        # recognised after its first failures, and unknown usernames are treated alike (no probing).
        user_key = "user:" + username
        with self._lock:
            # Another check for this username is under way, with other credentials (the same
            # ones would have joined its flight): at most one of them can be right.
            concurrent = self._checking.get(username, 0)
            self._checking[username] = concurrent + 1
        suspect = bool(concurrent) or self.throttle.suspect(source) or self.user_failures.suspect(user_key)
        keys = ("source:" + (source or ""), user_key)
        hashed = entry[1] if entry is not None else self._dummy
        try:
            ok = hashed is not None and self.queue.run(self._check_sync, hashed, password, suspect=suspect,
                                                       keys=keys)
        finally:
            with self._lock:
                left = self._checking[username] - 1
                if left:
                    self._checking[username] = left
                else:
                    del self._checking[username]
        if entry is None or not ok:
            self.throttle.failed(source)
            self.user_failures.failed(user_key)
            for k in keys:
                self.queue.demote(k)
            raise BadCredentials("unknown user or wrong password")
        ident_id = entry[0]
        now = time.monotonic()
        with self._lock:
            if len(self._cache) >= MAX_CACHE:
                self._evict(now)
            self._cache[key] = (now + self.ttl, ident_id, username)
        return ident_id, username

    def _check_sync(self, hashed: str, password: str) -> bool:
        try:
            return self._hasher.verify(hashed, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    def _evict(self, now: float) -> None:
        expired = [k for k, v in self._cache.items() if v[0] <= now]
        for k in expired:
            del self._cache[k]
        if len(self._cache) >= MAX_CACHE:  # all live: drop the oldest half (dicts keep insertion order)
            for k in list(self._cache)[: MAX_CACHE // 2]:
                del self._cache[k]


def _pause(seconds: float) -> None:
    """Hold a refusal back briefly (no CPU, only this connection's time): a client that ignores
    Retry-After cannot turn cheap 429s into a request flood that slows everybody else."""
    time.sleep(seconds)


def hash_password(password: str) -> str:
    """An argon2id hash with argon2-cffi's default (RFC 9106 low-memory) parameters."""
    return argon2.PasswordHasher().hash(password)
