"""systemd's readiness protocol (``sd_notify``), without linking libsystemd.

:func:`notify` sends newline-separated ``KEY=value`` states as one datagram to
the unix socket named by ``$NOTIFY_SOCKET`` (a leading ``@`` is the abstract
namespace). Without that variable — not started by systemd, or a unit that is
not ``Type=notify`` — it does nothing. It never raises: a service must not fail
because its supervisor's socket went away; a failure is logged at debug.

States used: ``READY=1`` once the process accepts work, ``RELOADING=1`` (with
``MONOTONIC_USEC``) then ``READY=1`` around a configuration reload,
``STOPPING=1`` when a stop begins, and ``STATUS=`` free text for
``systemctl status``.
"""

from __future__ import annotations

import logging
import os
import socket
import time

log = logging.getLogger("angos.sdnotify")


def notify(*states: str) -> bool:
    """Send ``states``; True if a supervisor socket was there and took the message."""
    path = os.environ.get("NOTIFY_SOCKET")
    if not path or not states:
        return False
    address = "\0" + path[1:] if path.startswith("@") else path
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall("\n".join(states).encode())
        return True
    except OSError as exc:
        log.debug("sd_notify to %s failed: %s", path, exc)
        return False


def reloading() -> bool:
    """``RELOADING=1`` with the monotonic timestamp systemd uses to match the reply."""
    return notify("RELOADING=1", f"MONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}")
