"""S3 lock strategy: named locks as objects created with conditional writes.

A lock is the object ``_locks/<sha256(name)>`` in the metadata bucket (under
its key prefix). Protocol, all on S3 conditional requests:

- acquire: ``PUT`` with ``If-None-Match: *`` and a body ``{token, expires}``;
  412 means held. A held lock whose ``expires`` has passed (its holder died)
  is broken with ``DELETE`` + ``If-Match: <etag seen>``, so two waiters can
  never both break it and one of them delete the other's fresh lock.
- renew (every third of ``ttl_secs``, in a background thread/greenlet while
  held): ``PUT`` with ``If-Match: <our etag>``; 412 means the lock was lost.
- release: ``DELETE`` with ``If-Match: <our etag>``.

Waiters retry up to ``max_retries`` times ``retry_delay_ms`` apart. Expiry
compares the holder's clock with the waiter's, so boxes need NTP (the ttl is
at least 9 s, far above normal skew).

Start-up probes the endpoint: an S3 implementation that ignores
``If-None-Match`` would let two writers both "win" a lock, so a provider that
accepts a second conditional create of the same key is refused with a
:class:`~angos.config.ConfigError` naming the problem and the alternatives.
An unreachable endpoint is only logged (``/readyz`` reports it).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import uuid

from ..config import ConfigError
from ..outage import s3_outage
from .base import NotFound, StorageUnavailable
from .locks import LeasedLocks
from .s3 import S3Store

log = logging.getLogger("angos.storage.s3_locks")

LOCKS_DIR = "_locks"


class S3Locks(LeasedLocks):
    backend = "s3"
    service = "S3 lock backend"
    unavailable_errors = (StorageUnavailable,)

    def __init__(self, store_cfg, lock_cfg, store: S3Store | None = None, probe: bool = True):
        super().__init__(lock_cfg)
        self.renew_interval = lock_cfg.ttl_secs / 3
        self.store = store or S3Store.from_config(store_cfg)
        self.outage = s3_outage(self.store.bucket, self.store.endpoint)
        if probe:
            self.verify_conditional_writes()

    def verify_conditional_writes(self) -> None:
        if self.store.honours_conditional_writes(f"{LOCKS_DIR}/probe-{uuid.uuid4().hex}") is False:
            raise ConfigError(
                "metadata_store.s3.lock_strategy.s3: the S3 endpoint "
                f"{self.store.endpoint or '(default)'} does not honour conditional writes (If-None-Match: *), "
                "so S3 locks would not be exclusive; use [metadata_store.s3.lock_strategy.redis] instead")

    def _key(self, name: str) -> str:
        return f"{LOCKS_DIR}/{hashlib.sha256(name.encode()).hexdigest()}"

    def _body(self, token: str) -> bytes:
        return json.dumps({"token": token, "expires": time.time() + self.cfg.ttl_secs}).encode()

    # -- LeasedLocks: the handle is the ETag of our lock object

    def _try_acquire(self, key: str, token: str) -> str | None:
        return self.store.put_conditional(key, self._body(token), if_absent=True)

    def _on_busy(self, key: str) -> None:
        """Break the lock if its holder stopped renewing (its lease expired)."""
        try:
            etag, raw = self.store.get_versioned(key)
            holder = json.loads(raw)
        except NotFound:
            return
        except ValueError:
            holder = {"expires": 0}
        if holder.get("expires", 0) < time.time():
            log.warning("breaking expired S3 lock %s (its holder stopped renewing)", key)
            self._conditional_delete(key, etag)

    def _renew(self, key: str, token: str, etag: str) -> str | None:
        from botocore.exceptions import ClientError

        try:
            return self.store.put_conditional(key, self._body(token), if_match=etag)
        except (ClientError, NotFound):
            return None

    def _release(self, key: str, token: str, etag: str) -> None:
        self._conditional_delete(key, etag)

    def _conditional_delete(self, key: str, etag: str) -> bool:
        """Delete ``key`` only while it still has ``etag``: never someone else's fresh lock."""
        try:
            return self.store.delete_if_match(key, etag)
        except NotFound:
            return False

    def check(self) -> None:
        try:
            self.store.check()
        except StorageUnavailable as exc:
            raise self._unavailable(exc) from None


def probe_before_fork(store_cfg, lock_cfg) -> None:
    """Run the conditional-write probe in a forked child and raise its ConfigError here.

    The gunicorn master must not import boto3/urllib3 itself: its workers monkey-patch
    ``ssl`` with gevent after forking, and modules that imported ``ssl`` first break
    (RecursionError). A child process keeps the master clean.
    """
    import os

    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        os.close(read_fd)
        message = b""
        try:
            S3Locks(store_cfg, lock_cfg)
        except ConfigError as exc:
            message = str(exc).encode()
        except BaseException as exc:  # noqa: BLE001 - report anything else as a probe failure
            message = f"metadata_store.s3.lock_strategy.s3: probing the S3 endpoint failed: {exc}".encode()
        os.write(write_fd, message)
        os._exit(0)
    os.close(write_fd)
    chunks = []
    while True:
        block = os.read(read_fd, 65536)
        if not block:
            break
        chunks.append(block)
    os.close(read_fd)
    os.waitpid(pid, 0)
    if chunks:
        raise ConfigError(b"".join(chunks).decode(errors="replace"))
