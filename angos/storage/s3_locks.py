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

import contextlib
import hashlib
import json
import logging
import random
import threading
import time
import uuid

from ..config import ConfigError
from ..oci.errors import Unavailable
from .base import NotFound, StorageUnavailable
from .locks import LockManager, LockTimeout, MemoryLocks
from .s3 import S3Store

log = logging.getLogger("angos.storage.s3_locks")

LOCKS_DIR = "_locks"


class S3Locks(LockManager):
    backend = "s3"

    def __init__(self, store_cfg, lock_cfg, store: S3Store | None = None, probe: bool = True):
        self.cfg = lock_cfg
        self.store = store or S3Store.from_config(store_cfg)
        self._local = MemoryLocks(timeout=max(60.0, lock_cfg.max_retries * lock_cfg.retry_delay_ms / 1000 * 4),
                                  instrument=False)
        if probe:
            self.verify_conditional_writes()

    def verify_conditional_writes(self) -> None:
        key = f"{LOCKS_DIR}/probe-{uuid.uuid4().hex}"
        try:
            first = self.store.put_if_absent(key, b"1")
            second = self.store.put_if_absent(key, b"2")
        except StorageUnavailable as exc:
            # An outage is not a verdict: start (readyz reports it) rather than let a
            # worker respawned during an S3 blip take the whole server down.
            log.warning("could not verify that the S3 endpoint honours conditional writes: %s", exc)
            return
        finally:
            with contextlib.suppress(Exception):
                self.store.delete(key)
        if not (first and not second):
            raise ConfigError(
                "metadata_store.s3.lock_strategy.s3: the S3 endpoint "
                f"{self.store.endpoint or '(default)'} does not honour conditional writes (If-None-Match: *), "
                "so S3 locks would not be exclusive; use [metadata_store.s3.lock_strategy.redis] instead")

    def _key(self, name: str) -> str:
        return f"{LOCKS_DIR}/{hashlib.sha256(name.encode()).hexdigest()}"

    def _body(self, token: str) -> bytes:
        return json.dumps({"token": token, "expires": time.time() + self.cfg.ttl_secs}).encode()

    @contextlib.contextmanager
    def lock(self, name: str):
        key = self._key(name)
        with self._local.lock(key):
            token = uuid.uuid4().hex
            started = time.monotonic()
            state = {"etag": self._acquire(name, key, token, started)}
            stop = threading.Event()
            renewer = threading.Thread(target=self._keep_alive, args=(key, token, state, stop), daemon=True,
                                       name=f"lock-renew:{name}")
            renewer.start()
            try:
                yield
            finally:
                stop.set()
                renewer.join(5)
                self._conditional_delete(key, state["etag"])

    # -- S3 calls (conditional)

    def _client_call(self, fn, key: str, **kwargs):
        s = self.store
        with s._errors(key):
            return fn(Bucket=s.bucket, Key=s._k(key), **kwargs)

    def _try_create(self, key: str, token: str) -> str | None:
        from botocore.exceptions import ClientError

        try:
            return self._client_call(self.store.client.put_object, key, Body=self._body(token),
                                     IfNoneMatch="*")["ETag"]
        except ClientError as exc:
            if self.store._code(exc) in ("PreconditionFailed", "ConditionalRequestConflict"):
                return None
            raise

    def _conditional_delete(self, key: str, etag: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self._client_call(self.store.client.delete_object, key, IfMatch=etag)
            return True
        except NotFound:
            return False
        except ClientError as exc:
            if self.store._code(exc) in ("PreconditionFailed", "ConditionalRequestConflict"):
                return False
            raise
        except StorageUnavailable as exc:
            log.warning("could not release S3 lock %s: %s (it expires on its own)", key, exc)
            return False

    def _break_if_expired(self, key: str) -> None:
        try:
            resp = self._client_call(self.store.client.get_object, key)
            holder = json.loads(resp["Body"].read())
        except NotFound:
            return
        except ValueError:
            holder = {"expires": 0}
        if holder.get("expires", 0) < time.time():
            log.warning("breaking expired S3 lock %s (its holder stopped renewing)", key)
            self._conditional_delete(key, resp["ETag"])

    def _acquire(self, name: str, key: str, token: str, started: float) -> str:
        delay = self.cfg.retry_delay_ms / 1000
        try:
            for attempt in range(self.cfg.max_retries + 1):
                etag = self._try_create(key, token)
                if etag is not None:
                    self._acquired(started, True)
                    return etag
                self._break_if_expired(key)
                if attempt < self.cfg.max_retries:
                    time.sleep(delay * random.uniform(0.5, 1.5))
        except StorageUnavailable as exc:
            from .. import metrics as m

            m.LOCK_ACQUISITIONS.labels(self.backend, "error").inc()
            raise Unavailable(f"S3 lock backend unreachable: {exc}") from None
        self._acquired(started, False)
        raise LockTimeout(f"lock {name!r} still held elsewhere after {self.cfg.max_retries} retries")

    def _keep_alive(self, key: str, token: str, state: dict, stop: threading.Event) -> None:
        from botocore.exceptions import ClientError

        while not stop.wait(self.cfg.ttl_secs / 3):
            try:
                state["etag"] = self._client_call(self.store.client.put_object, key, Body=self._body(token),
                                                  IfMatch=state["etag"])["ETag"]
            except (ClientError, NotFound):
                log.error("S3 lock %s was lost before its holder finished (expired or taken over)", key)
                return
            except StorageUnavailable as exc:
                log.warning("could not renew S3 lock %s: %s", key, exc)

    def check(self) -> None:
        try:
            self.store.check()
        except StorageUnavailable as exc:
            raise Unavailable(f"S3 lock backend unreachable: {exc}") from None


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
