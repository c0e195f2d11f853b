"""One log line when a starting server answers: ``ready on http://127.0.0.1:8000``.

``angos server`` (and so ``make run``) says when requests will be served, so a
person at a terminal, or a script reading the log, need not guess. The
gunicorn master calls :func:`announce` from its ``when_ready`` hook: the
sockets listen by then, but no worker has built the app yet (the first run of
``make run`` also spends minutes on the venv before that). A daemon thread
asks the server's own ``GET /readyz`` on the listening address (loopback for
a wildcard bind) until it answers, then logs one INFO line on
``angos.server``:

- ``200``: ``ready on <url>``;
- ``401``/``403``, a policy that wants credentials for the probe:
  ``answering on <url>`` and why readiness is not known;
- ``503`` (storage or the lock backend not usable yet): one WARNING with the
  reason the first time, then it keeps asking;
- no answer yet (workers still starting): it keeps asking, every
  :data:`INTERVAL` seconds, for at most :data:`PATIENCE` seconds, then logs a
  WARNING and stops.

With ``[server.tls] client_auth = "required"`` a probe without a client
certificate is refused during the handshake, so nothing is asked: the line
says ``listening on <url>``. The probe never delays or fails start-up, and a
reload does not repeat it (``when_ready`` runs once per master).
"""

from __future__ import annotations

import http.client
import logging
import ssl
import threading
import time

log = logging.getLogger("angos.server")

INTERVAL = 0.2          # seconds between probes while the workers start
PATIENCE = 600.0        # seconds after which the probe gives up (the line is informative only)
PROBE_TIMEOUT = 5.0     # one probe's connect and read timeout
_WILDCARDS = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}


def probe_target(cfg) -> tuple[str, str, int, bool]:
    """``(url shown, host probed, port, tls)`` for this configuration's listener."""
    bind = cfg.server.bind_address.strip("[]")
    host = _WILDCARDS.get(bind, bind)
    tls = cfg.server.tls is not None
    shown = f"[{host}]" if ":" in host else host
    return f"{'https' if tls else 'http'}://{shown}:{cfg.server.port}", host, cfg.server.port, tls


def describe(cfg) -> str:
    """What follows the URL in the line: the real bind address when the URL names loopback for it."""
    bind = cfg.server.bind_address.strip("[]")
    return f" (listening on {cfg.server.bind_address} port {cfg.server.port})" if bind in _WILDCARDS else ""


def ask(host: str, port: int, tls: bool, timeout: float = PROBE_TIMEOUT) -> tuple[int, str] | None:
    """``(status, body)`` of one ``GET /readyz``, or None when nothing answered."""
    if tls:
        # Our own listener on this host: what matters is that it answers, not whose name is
        # on the certificate (it may well not name the loopback address).
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        conn = http.client.HTTPSConnection(host, port, timeout=timeout, context=context)
    else:
        conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", "/readyz", headers={"Connection": "close", "User-Agent": "angos-ready-probe"})
        resp = conn.getresponse()
        return resp.status, resp.read(2048).decode("utf-8", "replace").strip()
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()


def watch(cfg, clock=time.monotonic, sleep=time.sleep) -> str | None:
    """Probe until the server answers; log and return the line (None when it gave up)."""
    url, host, port, tls = probe_target(cfg)
    where = url + describe(cfg)
    if tls and cfg.server.tls.client_auth == "required":
        line = f"listening on {where} (client certificates required: readiness not probed)"
        log.info(line)
        return line
    deadline = clock() + PATIENCE
    warned = False
    while clock() < deadline:
        answer = ask(host, port, tls)
        if answer is not None:
            status, body = answer
            if status == 200:
                line = f"ready on {where}"
                log.info(line)
                return line
            if status in (401, 403):
                line = (f"answering on {where} (/readyz answered {status}: the access policy wants "
                        "credentials for it, so readiness is not known)")
                log.info(line)
                return line
            if not warned:
                log.warning("not ready yet on %s: /readyz answered %s %s", url, status, body[:300])
                warned = True
        sleep(INTERVAL)
    log.warning("no ready answer from %s/readyz after %.0f s; still serving what it can", url, PATIENCE)
    return None


def announce(cfg) -> threading.Thread:
    """Start the probe in a daemon thread of the calling (master) process."""
    thread = threading.Thread(target=watch, args=(cfg,), name="angos-ready-probe", daemon=True)
    thread.start()
    return thread
