"""systemd's readiness protocol (``sd_notify``) for the server and ``angos worker``.

:func:`notify` sends newline-separated ``KEY=value`` states as one datagram
through gunicorn's own sender (the one its master uses for ``READY=1``), so
there is one implementation: without ``$NOTIFY_SOCKET`` — not started by
systemd, or a unit that is not ``Type=notify`` — it does nothing, and it never
raises (a failure is logged at debug), because a service must not fail when
its supervisor's socket went away.

States used: ``READY=1`` once the process accepts work, ``RELOADING=1`` (with
``MONOTONIC_USEC``) then ``READY=1`` around a configuration reload,
``STOPPING=1`` when a stop begins, and ``STATUS=`` free text for
``systemctl status``.
"""

from __future__ import annotations

import logging
import time

from gunicorn.systemd import sd_notify

log = logging.getLogger("angos.sdnotify")


def notify(*states: str) -> None:
    """Send ``states`` as one message (gunicorn's sender: a no-op without ``$NOTIFY_SOCKET``)."""
    if states:
        sd_notify("\n".join(states), log)


def reloading() -> None:
    """``RELOADING=1`` with the monotonic timestamp systemd uses to match the reply."""
    notify("RELOADING=1", f"MONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}")
