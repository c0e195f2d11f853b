"""The keys that sign registry tokens, kept on the metadata store so every server sharing it agrees.

Contract:

- Time is cut into signing periods of ``key_rotation_days``. The key of a
  period is named by the period's start in Unix seconds and its length in
  days (its ``kid``, ``<start>-<days>``: a changed rotation setting never
  meets a key made for another period length) and stored at
  :func:`angos.registry.paths.token_key` as JSON ``{kid, secret,
  sign_until, expires_at}`` (``secret``: base64 of 32 random bytes; times:
  Unix seconds).
- :meth:`TokenKeys.signing_key` returns the current period's key. The first
  server that needs it creates it with ``put_if_absent``; a server that loses
  that race reads the winner's, so every server and worker process sharing the
  store signs with the same key. Nothing is generated before a token is first
  issued or verified.
- A key signs until ``sign_until`` (the end of its period) and verifies until
  ``expires_at`` (the end of its period plus the token lifetime in force when
  it was made). Issuers cap a token's ``exp`` at ``expires_at``, so rotating
  never cuts a live token short: the previous key keeps verifying until the
  last token it signed has expired. The server that creates a key deletes the
  keys whose ``expires_at`` passed more than :data:`GRACE` ago.
- :meth:`TokenKeys.verifying_key` finds the key a token names: from memory,
  else by listing the stored keys and reading those not yet in memory (keys
  other servers made, or every live key after a restart). Such refreshes
  are rate limited per process (:data:`LOOKUP_BURST`, then one per
  :data:`LOOKUP_INTERVAL`), so tokens with made-up kids cannot turn into a
  stream of storage requests; a refused token just makes its client fetch a
  new one.
- Storage failures propagate (``StorageUnavailable``, answered ``503``).

``clock`` (Unix seconds) is a parameter so tests can make keys of other periods.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import re
import threading
import time
from dataclasses import dataclass
from typing import Callable

from ..registry import paths
from ..storage import NotFound

log = logging.getLogger("angos.auth.token_keys")

GRACE = 3600.0           # seconds an expired key is kept (clocks of servers sharing a store differ a little)
LOOKUP_INTERVAL = 1.0    # one listing of the stored keys per second for kids not in memory,
LOOKUP_BURST = 5         # after a burst of this many
_KID = re.compile(r"[0-9]{1,12}-[0-9]{1,4}")


@dataclass(frozen=True)
class SigningKey:
    kid: str
    secret: bytes
    sign_until: float
    expires_at: float

    def to_json(self) -> bytes:
        return json.dumps({"kid": self.kid, "secret": base64.b64encode(self.secret).decode(),
                           "sign_until": self.sign_until, "expires_at": self.expires_at}).encode()

    @classmethod
    def from_json(cls, kid: str, data: bytes) -> "SigningKey":
        doc = json.loads(data)
        secret = base64.b64decode(doc["secret"], validate=True)
        if doc.get("kid") != kid or len(secret) < 32:
            raise ValueError("key record does not match its name or is too short")
        return cls(kid, secret, float(doc["sign_until"]), float(doc["expires_at"]))


class TokenKeys:
    def __init__(self, store, rotation_days: int, lifetime_secs: int, clock: Callable[[], float] = time.time):
        self.store = store
        self.days = rotation_days
        self.period = rotation_days * 86400
        self.lifetime = lifetime_secs
        self.clock = clock
        self._keys: dict[str, SigningKey] = {}
        self._current: SigningKey | None = None
        self._lookups, self._lookups_at = float(LOOKUP_BURST), time.monotonic()
        self._lock = threading.Lock()

    def signing_key(self) -> SigningKey:
        now = self.clock()
        current = self._current
        if current is not None and current.sign_until - self.period <= now < current.sign_until:
            return current
        start = int(now // self.period * self.period)
        kid = f"{start}-{self.days}"
        key = self._keys.get(kid) or self._load_or_create(kid, start)
        self._current = key
        return key

    def verifying_key(self, kid: str) -> SigningKey | None:
        key = self._keys.get(kid)
        if key is not None:
            return key
        if not _KID.fullmatch(kid):
            return None
        with self._lock:
            now = time.monotonic()
            self._lookups = min(LOOKUP_BURST, self._lookups + (now - self._lookups_at) / LOOKUP_INTERVAL)
            self._lookups_at = now
            if self._lookups < 1:
                return None
            self._lookups -= 1
        self._refresh()
        return self._keys.get(kid)

    # ------------------------------------------------------------ storage

    def _read(self, kid: str) -> SigningKey | None:
        try:
            data = self.store.get(paths.token_key(kid))
        except NotFound:
            return None
        try:
            key = SigningKey.from_json(kid, data)
        except (ValueError, KeyError, TypeError) as exc:
            log.error("token signing key %s is unreadable (%s); tokens naming it are refused", kid, exc)
            return None
        with self._lock:
            self._keys[kid] = key
        return key

    def _refresh(self) -> None:
        """Read every stored key not yet in memory: one listing finds all the keys other servers made
        (after a restart, tokens of the current and the previous key arrive together)."""
        for name in self.store.children(paths.TOKEN_KEYS):
            if _KID.fullmatch(name) and name not in self._keys:
                self._read(name)

    def _load_or_create(self, kid: str, start: int) -> SigningKey:
        key = self._read(kid)
        if key is not None:
            return key
        end = float(start + self.period)
        mine = SigningKey(kid, os.urandom(32), end, end + self.lifetime)
        if self.store.put_if_absent(paths.token_key(kid), mine.to_json()):
            log.info("made token signing key %s (signs until %s)", kid,
                     time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(end)))
            with self._lock:
                self._keys[kid] = mine
            self._prune()
            return mine
        key = self._read(kid)  # another server or worker made it first: use theirs
        if key is None:
            raise RuntimeError(f"token signing key {kid} exists but cannot be read")
        return key

    def _prune(self) -> None:
        """Delete keys whose last token has expired (best effort: a failure only leaves a stale key)."""
        now = self.clock()
        try:
            for name in self.store.children(paths.TOKEN_KEYS):
                if not _KID.fullmatch(name):
                    continue
                try:
                    key = SigningKey.from_json(name, self.store.get(paths.token_key(name)))
                except NotFound:
                    continue
                except (ValueError, KeyError, TypeError):
                    continue  # left for an operator to look at; never used to verify anything
                if key.expires_at + GRACE < now:
                    self.store.delete(paths.token_key(name))
                    with self._lock:
                        self._keys.pop(name, None)
        except Exception as exc:  # noqa: BLE001 - pruning must never fail the request that made a key
            log.warning("could not prune old token signing keys: %s", exc)
