"""Configuration hot reload: watch the config files, validate, decide what applies live.

:class:`ConfigWatcher` polls the files' modification times and sizes (cheap,
no inotify dependency). When they change it loads the files again:

- an invalid result is logged with its one-line error and the old
  configuration stays in force;
- a valid result is first checked by ``validate(new_cfg)`` (which may raise,
  e.g. for a policy rule that does not compile), then becomes ``current``
  and, when the change was noticed by the polling thread, ``notify()`` is
  called so the process can apply it. Options that only a restart can change (SPEC 3: bind address and port, TLS on/off, the storage
  backends, the lock strategy, adding or removing ``[global.job_queue]``) are
  logged as such and keep their running values until the next restart.

``reload_now()`` does the same on demand (SIGHUP) without calling ``notify``.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Callable

from .config import ConfigError, load_config

log = logging.getLogger("angos.reload")


def file_state(paths) -> tuple:
    """A cheap fingerprint of files (inode, size, mtime); None for a missing file."""
    state = []
    for p in paths:
        try:
            st = os.stat(p)
            state.append((st.st_ino, st.st_size, st.st_mtime_ns))
        except OSError:
            state.append(None)
    return tuple(state)


def restart_only_changes(old, new) -> list[str]:
    """Names of options that differ between ``old`` and ``new`` but need a restart."""
    out = []
    if old.server.bind_address != new.server.bind_address:
        out.append("server.bind_address")
    if old.server.port != new.server.port:
        out.append("server.port")
    if (old.server.tls is None) != (new.server.tls is None):
        out.append("server.tls (enabling or disabling TLS)")
    if old.blob_store.backend != new.blob_store.backend:
        out.append("blob_store backend")
    if old.metadata.backend != new.metadata.backend:
        out.append("metadata_store backend")
    if old.metadata.lock_strategy.kind != new.metadata.lock_strategy.kind:
        out.append("metadata_store lock_strategy")
    if (old.global_.job_queue is None) != (new.global_.job_queue is None):
        out.append("global.job_queue (adding or removing it)")
    return out


def keep_restart_only(old, new):
    """``new`` with every restart-only option put back to its running value."""
    import dataclasses

    server = dataclasses.replace(new.server, bind_address=old.server.bind_address, port=old.server.port,
                                 tls=new.server.tls if (old.server.tls is None) == (new.server.tls is None)
                                 else old.server.tls)
    cfg = dataclasses.replace(new, server=server)
    if old.blob_store.backend != new.blob_store.backend:
        cfg = dataclasses.replace(cfg, blob_store=old.blob_store)
    if (old.metadata.backend != new.metadata.backend
            or old.metadata.lock_strategy.kind != new.metadata.lock_strategy.kind):
        cfg = dataclasses.replace(cfg, metadata_store=old.metadata_store, blob_store=old.blob_store)
    if (old.global_.job_queue is None) != (new.global_.job_queue is None):
        cfg = dataclasses.replace(cfg, global_=dataclasses.replace(new.global_, job_queue=old.global_.job_queue))
    return cfg


class ConfigWatcher:
    def __init__(self, paths, current, validate: Callable = lambda cfg: None, notify: Callable = lambda: None,
                 interval: float = 1.0):
        self.paths = [os.path.abspath(p) for p in paths]
        self.current = current
        self.validate = validate
        self.notify = notify
        self.interval = interval
        self._stamp = file_state(self.paths)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def start(self) -> "ConfigWatcher":
        self._thread = threading.Thread(target=self._run, name="angos-config-watch", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            stamp = file_state(self.paths)
            if stamp != self._stamp:
                self._stamp = stamp
                if self.reload_now():
                    self.notify()

    def reload_now(self) -> bool:
        """Load, validate and apply the files; returns whether a new configuration took effect."""
        with self._lock:
            try:
                new = load_config(self.paths)
            except ConfigError as exc:
                log.error("configuration change rejected, keeping the running configuration: %s", exc)
                return False
            pending = restart_only_changes(self.current, new)
            if pending:
                log.warning("these changes take effect only after a restart: %s", ", ".join(pending))
                new = keep_restart_only(self.current, new)
            if new == self.current:
                return False
            try:
                self.validate(new)
            except Exception as exc:  # noqa: BLE001 - e.g. a policy rule that does not compile
                log.error("configuration change rejected, keeping the running configuration: %s", exc)
                return False
            self.current = new
            log.info("configuration reloaded from %s", ", ".join(self.paths))
            return True
