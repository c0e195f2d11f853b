"""The drain's watch over its downstreams: every configured one's series from start-up, and probes.

Started once in each process that drains the ``replication`` queue (``angos worker``, the
server's in-process drain; registered with :func:`angos.queue.kinds.on_drain`, so not in
``angos replicate``), it looks at the *current* configuration every :data:`TICK` seconds:

- **Series from start-up.** For each configured downstream name it has not seen yet it
  creates ``angos_replication_push_total{downstream,outcome}`` for every outcome,
  ``angos_replication_last_success_timestamp_seconds`` and
  ``angos_replication_sent_bytes_total``, all at 0, so a downstream that never accepted
  anything is on ``/metrics`` (last success 0) rather than missing. A name that leaves the
  configuration has its series removed from this process's registry; under ``angos server``
  the values live in multiprocess files that a process cannot take back, so the server
  replaces its drain when a downstream is removed (:mod:`angos.server`): the new drain's
  ``up`` series then cover only configured downstreams, while counters and last-success
  values of a removed one stay until the server restarts (Prometheus counters never go back).
- **Probes.** For each configured downstream (its breaker key: name and URL host) it asks
  :meth:`~.admission.Admission.claim_probe` whether to probe now (never looked at, down and
  due, or up and not reached by any job or probe for ``idle_probe_secs``) and, if so, sends
  the breaker's probe (``GET /v2/`` within ``probe_timeout_secs``) in a thread of its own and
  reports the answer with :meth:`~.admission.Admission.probed`. So
  ``angos_replication_downstream_up`` is 0 within ``probe_timeout_secs`` of start-up for a
  downstream that was never up, and tells the truth about one that no job is reaching.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Callable

from .. import metrics as m
from .backlog import downstream_names
from .mapping import remote_namespace

log = logging.getLogger("angos.replication.watch")

TICK = 0.5


def downstream_keys(cfg) -> dict[tuple[str, str], object]:
    """The breaker keys (name, base URL) of every configured downstream, with one of its configs."""
    out: dict[tuple[str, str], object] = {}
    for repo_key, repo in cfg.repository.items():
        for ds in repo.downstream:
            out.setdefault((ds.name, remote_namespace(repo_key, repo_key, ds.url).base_url), ds)
    return out


def create_series(name: str) -> None:
    """Every series of downstream ``name`` that a job would create, at 0."""
    for outcome in m.REPLICATION_PUSH_OUTCOMES:
        m.REPLICATION_PUSH.labels(name, outcome)
    m.REPLICATION_LAST_SUCCESS.labels(name)
    m.REPLICATION_SENT_BYTES.labels(name)


def remove_series(name: str) -> None:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return  # multiprocess files cannot forget a series: the server replaces its drain instead
    for metric, labels in [(m.REPLICATION_PUSH, (name, o)) for o in m.REPLICATION_PUSH_OUTCOMES] + [
            (m.REPLICATION_LAST_SUCCESS, (name,)), (m.REPLICATION_SENT_BYTES, (name,)),
            (m.REPLICATION_DOWNSTREAM_UP, (name,))]:
        try:
            metric.remove(*labels)
        except KeyError:
            pass


class DownstreamWatch:
    def __init__(self, handler, config: Callable):
        """``handler`` is the process's :class:`~.handler.ReplicationHandler` (its breaker and
        clients); ``config()`` returns the current configuration."""
        self.handler = handler
        self.config = config
        self.named: set[str] = set()

    def tick(self) -> list[threading.Thread]:
        """One look at the configuration; returns the probe threads it started."""
        cfg = self.config()
        names = set(downstream_names(cfg))
        for name in names - self.named:
            create_series(name)
        for name in self.named - names:
            remove_series(name)
        self.named = names
        settings = cfg.global_.replication
        started = []
        for key, ds in downstream_keys(cfg).items():
            if self.handler.admission.claim_probe(key, settings.idle_probe_secs):
                t = threading.Thread(target=self._probe, args=(key, ds, settings.probe_timeout_secs),
                                     name=f"angos-probe-{key[0]}", daemon=True)
                t.start()
                started.append(t)
        return started

    def _probe(self, key, ds, timeout: float) -> None:
        why = "the probe did not finish"
        try:
            why = self.handler._client(key[1], ds).ping(timeout)
        except Exception as exc:  # noqa: BLE001 - a probe that fails in any way means "down"
            why = f"{type(exc).__name__}: {exc}"
        finally:
            self.handler.admission.probed(key, why)

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                self.tick()
            except Exception:  # noqa: BLE001 - keep watching through a bad tick
                log.exception("the downstream watch failed; trying again")
            stop.wait(TICK)


def start(handler, config: Callable) -> tuple[DownstreamWatch, threading.Event]:
    """Run a :class:`DownstreamWatch` in a daemon thread (a greenlet under gevent); set the returned
    event to stop it."""
    watch = DownstreamWatch(handler, config)
    stop = threading.Event()
    threading.Thread(target=watch.run, args=(stop,), name="angos-downstream-watch", daemon=True).start()
    return watch, stop
