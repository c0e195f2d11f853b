"""Backend outages, reported once: one line when a backend goes away, one when it is back.

Loops that talk to a shared backend (the job queue's Redis or S3 store, the
Redis lock service) run in several threads at once and retry every few
milliseconds; logging each failure with its traceback buried the one useful
fact under megabytes. Each loop reports to the process-wide :class:`Outage`
of its backend (:func:`outage`, keyed by its name) instead:

- the first failure logs one WARNING: what is down and where (the name the
  caller gives, e.g. "the job queue's Redis at 10.0.0.5:6379"), the error in
  one line, and that it is retried;
- further failures log at DEBUG only, and :meth:`Outage.failed` returns how
  long the caller should wait before its next try: a backoff doubling from
  :data:`FIRST_DELAY` to at most :data:`MAX_DELAY` seconds, shared by all the
  callers of that backend;
- the first success after that (:meth:`Outage.ok`) logs one INFO line saying
  it is reachable again and how long it was down.

:func:`is_unreachable` tells a backend outage (connection refused or reset,
timeouts, DNS, a 5xx from S3) from other errors, which callers keep logging as
before. Nothing here imports a client library unless it is already loaded.
"""

from __future__ import annotations

import logging
import sys
import threading
import time

log = logging.getLogger("angos.outage")

FIRST_DELAY = 0.5
MAX_DELAY = 10.0


class Outage:
    def __init__(self, what: str):
        self.what = what
        self._lock = threading.Lock()
        self._down_since: float | None = None
        self._delay = FIRST_DELAY

    @property
    def down(self) -> bool:
        return self._down_since is not None

    def failed(self, exc: BaseException) -> float:
        """Report a failed call; returns the delay before the next try."""
        with self._lock:
            first = self._down_since is None
            if first:
                self._down_since = time.monotonic()
                self._delay = FIRST_DELAY
            delay = self._delay
            self._delay = min(self._delay * 2, MAX_DELAY)
        if first:
            log.warning("%s is unreachable (%s); retrying with backoff up to %ss", self.what, one_line(exc),
                        int(MAX_DELAY))
        else:
            log.debug("%s still unreachable: %s", self.what, one_line(exc))
        return delay

    def ok(self) -> None:
        """Report a successful call (cheap when nothing was down)."""
        if self._down_since is None:
            return
        with self._lock:
            since, self._down_since = self._down_since, None
            self._delay = FIRST_DELAY
        if since is not None:
            log.info("%s is reachable again (down for %.1fs)", self.what, time.monotonic() - since)


_outages: dict[str, Outage] = {}
_registry_lock = threading.Lock()


def outage(what: str) -> Outage:
    """The process-wide :class:`Outage` of one backend, by the name its reports use."""
    found = _outages.get(what)
    if found is None:
        with _registry_lock:
            found = _outages.setdefault(what, Outage(what))
    return found


def redis_outage(url: str | None) -> Outage:
    """The outage of the Redis server at ``url``: one per server, whoever uses it (queue, locks, wake-ups)."""
    return outage(f"Redis at {redis_address(url)}")


def s3_outage(bucket: str, endpoint: str | None) -> Outage:
    """The outage of one S3 bucket (its endpoint named when not AWS's default)."""
    return outage(f"S3 bucket {bucket}" + (f" at {endpoint}" if endpoint else ""))


def one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 300 else text[:300] + "…"


def is_unreachable(exc: BaseException) -> bool:
    """Whether ``exc`` means "the backend cannot be reached right now" rather than a bug or a refusal."""
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return True
    redis = sys.modules.get("redis.exceptions")
    if redis is not None and isinstance(exc, (redis.ConnectionError, redis.TimeoutError)):
        return True
    botocore = sys.modules.get("botocore.exceptions")
    if botocore is not None:
        if isinstance(exc, (botocore.ConnectionError, botocore.HTTPClientError)):
            return True
        if isinstance(exc, botocore.ClientError):
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
            return status >= 500
    storage = sys.modules.get("angos.storage.base")
    if storage is not None and isinstance(exc, storage.StorageUnavailable):
        return True
    return False


def redis_address(url: str | None) -> str:
    """``host:port`` of a Redis URL, never its password."""
    from urllib.parse import urlsplit

    if not url:
        return "?"
    try:
        parts = urlsplit(url)
        return f"{parts.hostname}:{parts.port or 6379}"
    except ValueError:
        return "?"
