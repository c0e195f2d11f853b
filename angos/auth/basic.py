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
- Under gevent the argon2 call runs on gevent's thread pool (argon2-cffi
  releases the GIL), so one slow verification does not stall every other
  request the worker is serving. Memory stays bounded: requests carrying the
  same credentials share one verification (single flight), and at most
  ``MAX_PARALLEL`` verifications run at once per process (each needs the
  hash's memory cost, 64 MiB with the defaults ``angos argon`` uses).
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

from ..config import ConfigError

DEFAULT_TTL = 60.0
MAX_CACHE = 10_000
MAX_PARALLEL = 4


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
    m = _PHC.match(value) if isinstance(value, str) else None
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


def _in_gevent() -> bool:
    try:
        from gevent import monkey
    except ImportError:  # pragma: no cover - gevent is a dependency
        return False
    return monkey.is_module_patched("socket")


class BasicAuth:
    def __init__(self, identities: dict, ttl: float = DEFAULT_TTL):
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
        self._inflight: dict[bytes, threading.Lock] = {}
        self._slots = threading.BoundedSemaphore(MAX_PARALLEL)
        self._gevent = _in_gevent()

    @property
    def configured(self) -> bool:
        return bool(self._users)

    def verify(self, header: str) -> tuple[str, str]:
        """Right credentials → (identity id, username); anything else raises BadCredentials."""
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
            return hit[1], hit[2]
        # Single flight: concurrent requests with the same credentials (a client
        # opening many connections at once) wait for one verification instead of
        # each running argon2 (64 MiB apiece with the default parameters).
        with self._lock:
            flight = self._inflight.setdefault(key, threading.Lock())
        try:
            with flight:
                hit = self._cache.get(key)
                if hit is not None and hit[0] > time.monotonic():
                    return hit[1], hit[2]
                return self._verify_slow(key, username, password)
        finally:
            with self._lock:
                if self._inflight.get(key) is flight and not flight.locked():
                    del self._inflight[key]

    def _verify_slow(self, key: bytes, username: str, password: str) -> tuple[str, str]:
        entry = self._users.get(username)
        if entry is None:
            if self._dummy is not None:
                self._check(self._dummy, password)
            raise BadCredentials("unknown user or wrong password")
        ident_id, hashed = entry
        if not self._check(hashed, password):
            raise BadCredentials("unknown user or wrong password")
        now = time.monotonic()
        with self._lock:
            if len(self._cache) >= MAX_CACHE:
                self._evict(now)
            self._cache[key] = (now + self.ttl, ident_id, username)
        return ident_id, username

    def _check(self, hashed: str, password: str) -> bool:
        with self._slots:  # bounds argon2's memory: at most MAX_PARALLEL verifications per process
            if self._gevent:
                import gevent

                return gevent.get_hub().threadpool.apply(self._check_sync, (hashed, password))
            return self._check_sync(hashed, password)

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


def hash_password(password: str) -> str:
    """An argon2id hash with argon2-cffi's default (RFC 9106 low-memory) parameters."""
    return argon2.PasswordHasher().hash(password)
