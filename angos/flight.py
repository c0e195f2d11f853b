"""In-process single flight: concurrent callers with one key share one call.

Role: greenlets of a worker that want the same answer at once make one call
between them: the pull-through cache's manifest misses (one upstream
request), the authorization webhook's decisions (one call to the service).
Contract: :meth:`SingleFlight.do` runs
``fn()`` once per key at a time; callers that arrive while it runs wait and
get its result (or its exception). Nothing is remembered after the call ends.
"""

from __future__ import annotations

import threading


class _Call:
    def __init__(self):
        self.done = threading.Event()
        self.value = None
        self.error: BaseException | None = None


class SingleFlight:
    def __init__(self):
        self._calls: dict = {}
        self._lock = threading.Lock()

    def do(self, key, fn):
        with self._lock:
            call = self._calls.get(key)
            leader = call is None
            if leader:
                call = self._calls[key] = _Call()
        if not leader:
            call.done.wait()
            if call.error is not None:
                raise call.error
            return call.value
        try:
            call.value = fn()
            return call.value
        except BaseException as exc:
            call.error = exc
            raise
        finally:
            with self._lock:
                del self._calls[key]
            call.done.set()
