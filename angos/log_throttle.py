"""A warning that cannot flood the log: at most one line per interval, counting what it held back.

A failing policy rule or authorization webhook fails every request it is asked about; under load
that would be thousands of identical lines a second. The owner keeps one :class:`Throttled` per
thing that can fail and asks :meth:`Throttled.allow` before logging.
"""

from __future__ import annotations

import threading
import time


class Throttled:
    def __init__(self, interval: float):
        self.interval = interval
        self._lock = threading.Lock()
        self._last = float("-inf")
        self._held = 0

    def allow(self) -> int | None:
        """None: hold this line back (it is counted). Otherwise log it, mentioning the returned
        number of lines held back since the previous one."""
        now = time.monotonic()
        with self._lock:
            if now - self._last < self.interval:
                self._held += 1
                return None
            held, self._held, self._last = self._held, 0, now
        return held
