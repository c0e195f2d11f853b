"""One delivery attempt (an HTTP POST), and the synchronous retry loop.

:func:`attempt` POSTs a body and classifies the result: ``delivered`` (any
2xx), ``failed`` (another answer: the receiver said no) or ``unreachable``
(no answer within ``timeout``, a connection error, or an answer saying the
receiver is not there now: 408, 429, 502, 503, 504). ``timeout`` bounds the
connection and each wait for the answer. Redirects are not followed; at most
64 KiB of a response body is read (so the connection can be reused), never kept. Each attempt counts in
``angos_event_webhook_deliveries_total{webhook,outcome}`` and
``angos_event_webhook_delivery_duration_seconds{webhook}``.

:func:`deliver` is what ``required`` and ``optional`` webhooks run during the
client's request: up to ``1 + max_retries`` attempts, 100 ms, 200 ms, 400 ms
... apart. Error texts name the webhook and the status or exception class,
never the token or the URL's query.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

import requests

from .. import metrics as m
from ..remote.unread import send
from .payload import headers

log = logging.getLogger("angos.events")

OUTCOMES = ("delivered", "failed", "unreachable")
_UNAVAILABLE = frozenset({408, 429, 502, 503, 504})

_session: requests.Session | None = None
_session_lock = threading.Lock()


def session() -> requests.Session:
    """One connection pool per process (keep-alive to receivers across deliveries)."""
    global _session
    with _session_lock:
        if _session is None:
            _session = requests.Session()
            _session.trust_env = False  # never route receivers through a proxy from the environment
        return _session


@dataclass(frozen=True)
class Result:
    outcome: str            # one of OUTCOMES
    status: int | None      # the receiver's HTTP status, None when it never answered
    error: str | None       # why it was not delivered (safe to log and to show a client)

    @property
    def ok(self) -> bool:
        return self.outcome == "delivered"


def attempt(name: str, hook, kind: str, event_id: str, body: bytes) -> Result:
    started = time.perf_counter()
    try:
        # Not session.post: that reads a redirect answer's body whole, whatever its size (remote/unread.py).
        resp = send(session(), "POST", hook.url, data=body, headers=headers(hook.token, kind, event_id, body),
                    timeout=hook.timeout)
        try:
            _discard(resp)
        finally:
            resp.close()
    except requests.Timeout:
        result = Result("unreachable", None, f"event webhook {name!r} did not answer within {hook.timeout:g}s")
    except requests.RequestException as exc:
        result = Result("unreachable", None, f"event webhook {name!r} cannot be reached ({type(exc).__name__})")
    else:
        status = resp.status_code
        if 200 <= status < 300:
            result = Result("delivered", status, None)
        else:
            result = Result("unreachable" if status in _UNAVAILABLE else "failed", status,
                            f"event webhook {name!r} answered HTTP {status}")
    m.EVENT_WEBHOOK_DELIVERIES.labels(name, result.outcome).inc()
    m.EVENT_WEBHOOK_DURATION.labels(name).observe(time.perf_counter() - started)
    if not result.ok:
        log.debug("%s %s (event %s): %s", kind, result.outcome, event_id, result.error)
    return result


def _discard(resp, limit: int = 65536) -> None:
    """Read a small answer to its end, so keep-alive can reuse the connection; a larger one is cut
    (closing the response then drops the connection instead)."""
    seen = 0
    try:
        for block in resp.iter_content(8192):
            seen += len(block)
            if seen > limit:
                return
    except requests.RequestException:
        pass  # the status is what counts; a broken body only costs the connection


def deliver(name: str, hook, kind: str, event_id: str, body: bytes) -> Result:
    """Synchronous delivery with ``max_retries`` retries; the last result."""
    result = attempt(name, hook, kind, event_id, body)
    for retry in range(hook.max_retries):
        if result.ok:
            break
        time.sleep(0.1 * 2 ** retry)
        result = attempt(name, hook, kind, event_id, body)
    return result


def zero_series(names) -> None:
    """Every outcome of every webhook at 0 from start-up (a rate() alert sees the first failure)."""
    for name in names:
        for outcome in OUTCOMES:
            m.EVENT_WEBHOOK_DELIVERIES.labels(name, outcome)
        m.EVENT_WEBHOOK_DURATION.labels(name)
