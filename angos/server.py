"""``angos server``: gunicorn with gevent workers on ``create_app``.

- The app is built in each worker after gevent has patched the process
  (no module-level app; ``preload_app`` stays off).
- SIGTERM is a graceful stop: gunicorn stops accepting and waits up to
  ``server.shutdown_drain_secs`` for in-flight requests. Idle keep-alive
  connections are not in-flight requests, but gunicorn's gevent worker waits
  for them too (up to ``keepalive_secs``), so any client holding an idle
  connection (docker, skopeo and requests all do) would stretch every stop to
  the full drain. :class:`SendfileGeventWorker` closes the read side of
  connections that sit idle between requests when the stop begins (and of
  those that go idle after it), which ends them cleanly; responses already
  being served are untouched.
- Prometheus multiprocess mode: a fresh directory is exported in
  ``PROMETHEUS_MULTIPROC_DIR`` before workers fork, so ``/metrics`` on any
  worker reports the sum over all of them.
- Zero-copy blob downloads: under the gevent worker, gunicorn's file wrapper
  path falls back to 8 KiB read/send loops because the socket is non-blocking.
  :class:`SendfileGeventWorker` replaces that one method with ``os.sendfile`` on
  the socket, waiting for writability through gevent, so a large download
  neither copies through Python nor blocks other greenlets.
- When the first worker has built the app, the master logs ``ready on
  http://<address>:<port>`` (:mod:`angos.ready`), the line ``make run`` users
  wait for.
- systemd: with ``$NOTIFY_SOCKET`` set (``Type=notify``) gunicorn's master
  reports ``READY=1`` once it listens; angos adds ``STATUS=``,
  ``RELOADING=1``/``READY=1`` around a reload and ``STOPPING=1`` when a stop
  begins (:mod:`angos.sdnotify`).
- TLS (``[server.tls]``): the context comes from gunicorn's ``ssl_context``
  hook as an :class:`angos.auth.tls.ReloadingTLS`, which swaps in a fresh
  context on the next handshake after the certificate, key or client CA files
  change on disk, so certificates rotate without a restart. The handshake is
  deferred to the first read, so it counts against the header timeout below.
- Slow and idle clients (``server.header_timeout_secs``, ``body_timeout_secs``,
  ``max_connections_per_ip``): every connection holds one of the worker's
  ``max_concurrent_requests`` slots, so clients that connect and send nothing
  (slowloris) could otherwise hold them all. A fresh connection must complete
  its request head (TLS handshake included) within the header timeout; a
  keep-alive connection waits ``keepalive_secs`` for its next request, as
  before. While a request is served, any read or write that makes no progress
  for the body timeout ends it (a stalled body answers ``408``). Which
  connections to accept, keep or close is decided by
  :class:`angos.connlimits.ConnectionTable`: per client address (the TCP peer;
  trusted proxies are exempt) at most ``max_connections_per_ip`` per worker,
  the address's longest-idle connection making room for a new one, and ``429
  TOOMANYREQUESTS`` when all of them are busy; when the pool fills up, the
  longest-idle connection is closed so the worker keeps accepting.
- Logging (:mod:`angos.server_log`): gunicorn's log goes through angos' handler
  and format; the access line is gunicorn's per-request hook. A TLS
  ClientHello on a plain-HTTP port (clients probing https first) is answered
  400 with one DEBUG line before gunicorn would parse it as a bad request.
  SIGINT (Ctrl-C) stops a worker like SIGTERM (see :meth:`handle_quit`).
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
import logging
import os
import shutil
import signal
import socket
import struct
import sys
import tempfile
import termios

from gunicorn.app.base import BaseApplication
from gunicorn.workers.ggevent import GeventWorker

from . import logs, sdnotify
from .oci.errors import AngosError
from .server_log import tls_probe_answered
from .startup_checks import summary as config_summary

log = logging.getLogger("angos.server")

# One header line: a registry token may be 16384 characters (angos.auth.token.MAX_TOKEN_LENGTH; an OIDC
# caller's claims ride along), and an OIDC token of 8192 as a Basic password is ~11 KB once
# base64-encoded. Both are beyond gunicorn's default of 8190 bytes, which answered 431. (Not imported:
# importing angos.auth here would load the metrics before their multi-process directory is set.)
MAX_HEADER_FIELD = 16384 + len("Authorization: Bearer ") + 64
# Half gunicorn's default number of fields keeps the most a client's header block can occupy
# (fields x field size) about where the defaults put it, ~0.8 MB; clients send a dozen or two.
MAX_HEADER_FIELDS = 50


def _zero_copy_sendfile(self, respiter):
    """Replacement for gunicorn's Response.sendfile (identical contract)."""
    from gevent.socket import wait_write
    from gunicorn import util

    if self.cfg.is_ssl or not self.can_sendfile() or self.is_chunked():
        return False
    if not util.has_fileno(respiter.filelike):
        return False
    fileno = respiter.filelike.fileno()
    try:
        offset = os.lseek(fileno, 0, os.SEEK_CUR)
        nbytes = self.response_length
        if nbytes is None:
            nbytes = os.fstat(fileno).st_size - offset
    except (OSError, io.UnsupportedOperation):
        return False
    self.send_headers()
    if getattr(self, "_omits_body", self.req.method == "HEAD"):
        return True
    sockfd = self.sock.fileno()
    sent = 0
    while sent < nbytes:
        try:
            n = os.sendfile(sockfd, fileno, offset + sent, nbytes - sent)
        except BlockingIOError:
            # The connection's own timeout (server.body_timeout_secs, set by the worker): a
            # client that stops reading a download ends it like any other stalled write.
            wait_write(sockfd, timeout=self.sock.gettimeout() or self.cfg.timeout or None)
            continue
        if n == 0:
            break  # the file shrank under us; the client sees a short body
        sent += n
    self.sent += sent
    return True


class SendfileGeventWorker(GeventWorker):
    def __init__(self, *args, **kwargs):
        from .connlimits import ConnectionTable

        super().__init__(*args, **kwargs)
        self._clients = {}   # handler greenlet -> its client socket
        self._served = set()  # handler greenlets whose connection already carried a request
        # The configuration this worker was forked with (a reload forks new workers).
        cfg = self.app.angos_cfg
        self._header_timeout = cfg.server.header_timeout_secs
        self._body_timeout = cfg.server.body_timeout_secs
        # Which greenlets wait for a request head (the ones a graceful stop may close at once).
        self._conns = ConnectionTable(self.worker_connections, cfg.server.max_connections_per_ip,
                                      cfg.global_.trusted_proxies)

    def init_process(self):
        from gunicorn.http import wsgi

        wsgi.Response.sendfile = _zero_copy_sendfile
        super().init_process()

    def run(self):
        # gunicorn asks the listener for its address when it starts reading a connection's first
        # request, but a stopping worker closes its listener first (to stop accepting): a
        # connection accepted just before, whose request arrived after, failed there with EBADF
        # and was reset unanswered (a reload dropped ~1 request in 10 runs of test_reload). Ask
        # once, while the listeners are open; handle() hands gunicorn a listener that remembers.
        self._listener_names = {id(s): s.getsockname() for s in self.sockets}
        super().run()

    def handle_request(self, listener_name, req, sock, addr):
        """Serve one request, then let other connections' greenlets run.

        gevent switches greenlets only when a socket operation would block. A
        keep-alive client that sends its next request as soon as it has read a
        response (wrk, a proxy, a busy CI runner) rarely makes the server's recv
        block, so one connection could be served back to back while the others
        wait: at 32 connections manifest GETs had p50 ~1 ms but p99 0.5-2.3 s.
        One yield per request makes service round-robin (p99 60-150 ms at the
        same throughput; see docs/performance.md).
        """
        import gevent

        try:
            return super().handle_request(listener_name, req, sock, addr)
        except TimeoutError:
            # A write that made no progress for server.body_timeout_secs (the client stopped
            # reading): end the connection like one the client closed, without a traceback.
            log.info("closing a connection from %s: no progress for %ss", addr[0] if addr else "?",
                     self._body_timeout)
            raise StopIteration() from None
        finally:
            self._served.add(gevent.getcurrent())
            gevent.sleep(0)

    def handle(self, listener, client, addr):
        import gevent
        from gunicorn.workers.base_async import AsyncWorker

        me = gevent.getcurrent()
        ip = addr[0] if isinstance(addr, tuple) and addr else None
        admitted, evict = self._conns.opened(me, ip, self._has_request)
        for glet in evict:
            self._close_idle(glet)
        if not admitted:
            _refuse(client)
            return
        self._clients[me] = client
        try:
            # GeventWorker.handle only makes the socket blocking (no timeout). Here the TLS
            # handshake (run by gunicorn before the first head) may not stall longer than the
            # header timeout; timeout_ctx then lifts it while a head is awaited (the head has
            # its own deadline) and sets the body timeout for serving the request.
            client.settimeout(self._header_timeout)
            # A stopping worker skips the TLS-probe peek (no need to wait there for a first byte:
            # gunicorn's own read is bounded the same way).
            if self.cfg.is_ssl or not self.alive or not tls_probe_answered(client, ip):
                AsyncWorker.handle(self, _NamedListener(listener, self._listener_names.get(id(listener))), client,
                                   addr)
        finally:
            self._clients.pop(me, None)
            self._conns.closed(me)
            self._served.discard(me)

    @contextlib.contextmanager
    def timeout_ctx(self):
        """gunicorn wraps the read of every request head in this (the first one included).

        A fresh connection gets ``header_timeout_secs`` for its head; one that already
        carried a request waits up to ``keepalive_secs`` for the next. Either way the
        deadline is gevent's, which ends the wait quietly and closes the connection."""
        import gevent

        me = gevent.getcurrent()
        client = self._clients.get(me)
        self._conns.waiting(me)
        logs.REQUEST_ID.set(None)  # what is logged until the next request's id is set belongs to no request
        try:
            if not self.alive:
                self._end_idle(me)
            if client is not None:
                client.settimeout(None)  # the deadline below bounds the head, not a per-read timeout
            limit = self.cfg.keepalive if me in self._served else self._header_timeout
            with gevent.Timeout(limit, False):
                yield
        finally:
            self._conns.serving(me)
            if client is not None:
                try:
                    client.settimeout(self._body_timeout)
                except OSError:
                    pass

    def handle_exit(self, sig, frame):
        import gevent

        super().handle_exit(sig, frame)
        for glet in list(self._conns.candidates()):
            self._end_idle(glet)
        # Replication status long polls answer now instead of holding the stop up (from a greenlet:
        # this is a signal handler). Never an import here: a SIGTERM that lands while the worker
        # still imports the app would raise ImportError ("partially initialized module") inside
        # that import, the worker would exit as "failed to boot" and the master would halt with
        # exit code 1. A module not loaded yet has no waiters.
        notify = sys.modules.get("angos.replication.notify")
        release = getattr(notify, "release_waiters", None)
        if release is not None:
            gevent.spawn(release)

    def handle_quit(self, sig, frame):
        """SIGINT or SIGQUIT: Ctrl-C in a terminal reaches every process of the server, and the
        master passes its own SIGINT on as SIGQUIT. gunicorn's gevent worker would exit with
        ``sys.exit`` from a greenlet, which gevent reports with a ``SystemExit`` traceback once the
        worker is already on its way out. Stop as on SIGTERM instead: idle connections end at once,
        requests in flight finish (the master still kills a worker after ``graceful_timeout``)."""
        self.cfg.worker_int(self)
        self.handle_exit(sig, frame)

    def _has_request(self, glet) -> bool:
        """Whether a waiting connection already has bytes of its next request in the kernel."""
        client = self._clients.get(glet)
        if client is None:
            return False
        try:
            pending, = struct.unpack("i", fcntl.ioctl(client.fileno(), termios.FIONREAD, b"\0\0\0\0"))
        except OSError:
            return False
        return pending > 0

    def _close_idle(self, glet) -> None:
        """End a connection that waits for a request (to make room): its read sees EOF and
        gunicorn closes it without answering."""
        client = self._clients.get(glet)
        if client is not None:
            _shutdown(client, socket.SHUT_RDWR)

    def _end_idle(self, glet) -> None:
        """Shut the read side of an idle connection: its pending read sees EOF and
        gunicorn closes it. A connection whose next request already arrived is left
        alone (it is served, then closed because the worker is stopping)."""
        client = self._clients.get(glet)
        if client is None or glet not in self._served or self._has_request(glet):
            # A fresh connection's first request may be on the wire right now (a client
            # that just connected, e.g. during a reload): let it be served (with
            # Connection: close) rather than closed unanswered.
            return
        _shutdown(client, socket.SHUT_RD)


class _NamedListener:
    """A listening socket whose ``getsockname()`` answers even after the worker closed it."""

    def __init__(self, listener, name):
        self._listener = listener
        self._name = name

    def getsockname(self):
        return self._name if self._name is not None else self._listener.getsockname()

    def __getattr__(self, attr):
        return getattr(self._listener, attr)


def _shutdown(client, how) -> None:
    """Shut a connection down so the greenlet reading it sees a plain EOF.

    gevent's own ``socket.shutdown`` wakes that greenlet with ``EBADF`` ("closed in
    another greenlet") instead, which gunicorn logs as a socket error with a traceback.
    A duplicate descriptor shuts down the same connection without touching the waiter."""
    try:
        dup = socket.socket(fileno=os.dup(client.fileno()))
    except OSError:
        return
    try:
        dup.shutdown(how)
    except OSError:
        pass
    finally:
        dup.close()


class AngosApplication(BaseApplication):
    def __init__(self, cfg, config_paths, hooks=None, watcher=None):
        self.angos_cfg = cfg
        self.config_paths = list(config_paths)
        self.hooks = hooks or {}
        self.watcher = watcher
        self._started = False
        super().__init__()

    def load_config(self):
        # gunicorn calls this at start and on every reload (SIGHUP, or the watcher's
        # own HUP after a file change): take the newest *validated* configuration.
        # At start the configuration was just loaded and validated by run(): say what it is.
        if not self._started:
            self._started = True
            log.info("configuration loaded from %s: %s", ", ".join(self.config_paths), config_summary(self.angos_cfg))
        elif self.watcher is not None:
            self.watcher.reload_now()
            self.angos_cfg = self.watcher.current
        # The master's format and access-log switch; workers forked from now on inherit them.
        logs.apply_config(self.angos_cfg)
        server = self.angos_cfg.server
        settings = {
            "bind": [f"{_host(server.bind_address)}:{server.port}"],
            "workers": server.workers,
            "worker_class": "angos.server.SendfileGeventWorker",
            "worker_connections": self.angos_cfg.global_.max_concurrent_requests,
            "timeout": server.query_timeout,
            "graceful_timeout": server.shutdown_drain_secs,
            "keepalive": server.keepalive_secs,
            "preload_app": False,
            "accesslog": None,  # angos.server_log writes the access line instead
            "logger_class": "angos.server_log.GunicornLogger",
            "proc_name": "angos-server",
            "limit_request_line": 8190,
            "limit_request_field_size": MAX_HEADER_FIELD,
            "limit_request_fields": MAX_HEADER_FIELDS,
        }
        if "control_socket_disable" in self.cfg.settings:
            settings["control_socket_disable"] = True
        if server.tls is not None:
            # certfile/keyfile switch gunicorn to TLS; the context itself comes from
            # the ssl_context hook, which follows the files as they change.
            settings["certfile"] = server.tls.server_certificate_bundle
            settings["keyfile"] = server.tls.server_private_key
            settings["ssl_context"] = _tls_context_hook(server.tls)
        settings.update(self.hooks)
        for key, value in settings.items():
            self.cfg.set(key, value)

    def load(self):
        from .api import create_app
        from .logs import setup_logging

        setup_logging(self.angos_cfg.global_.log_format)
        logs.apply_config(self.angos_cfg)  # this worker's configuration decides its format and access log
        # The master's configuration, validated before this worker was forked: a file
        # edited into an invalid state since then cannot break a new worker.
        return create_app(self.angos_cfg)


def _tls_context_hook(tls):
    """gunicorn ``ssl_context(config, default_factory)``: one reloading context per worker process."""
    built = {}

    def ssl_context(config, default_ssl_context_factory):
        from .auth.tls import ReloadingTLS

        pid = os.getpid()
        if pid not in built:
            built.clear()
            built[pid] = _DeferredHandshake(ReloadingTLS(tls).context)
        return built[pid]

    return ssl_context


class _DeferredHandshake:
    """What gevent's server needs of an SSL context (``wrap_socket``), with the handshake
    left to the first read instead of run before the worker's handler starts: there it
    falls under the request-head deadline, so a client that connects and never completes
    the handshake cannot hold a connection slot forever."""

    def __init__(self, context):
        self.context = context

    def wrap_socket(self, sock, **kwargs):
        kwargs["do_handshake_on_connect"] = False
        return self.context.wrap_socket(sock, **kwargs)


def _refuse(client) -> None:
    """Answer a connection over its address's cap with 429 TOOMANYREQUESTS and close it."""
    from .oci.errors import TooManyRequests

    body = json.dumps(TooManyRequests("too many connections from this address").to_json()).encode()
    head = (f"HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nRetry-After: 1\r\nConnection: close\r\n\r\n").encode()
    try:
        client.settimeout(1.0)  # best effort: a client that does not read gets nothing
        client.sendall(head + body)
        client.shutdown(socket.SHUT_WR)
    except OSError:
        pass
    finally:
        client.close()


def _host(address: str) -> str:
    return f"[{address}]" if ":" in address and not address.startswith("[") else address


def run(args, config_paths) -> int:
    """The ``angos server`` command."""
    # prometheus_client chooses its value store when it is first imported: the
    # multiprocess directory must be in the environment before anything
    # (config validation included) imports it, or workers would keep private
    # counters that /metrics never sees.
    metrics_dir = tempfile.mkdtemp(prefix="angos-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    master = os.getpid()
    try:
        from .config import load_config
        from .startup_checks import validate

        cfg = load_config(config_paths)
        logs.apply_config(cfg)
        validate(cfg)  # policies, hashes, TLS files: once, before forking workers (as check-config does)
        if cfg.metadata.lock_strategy.kind == "s3":
            from .storage.s3_locks import probe_before_fork

            probe_before_fork(cfg.metadata.s3, cfg.metadata.lock_strategy.s3)  # If-None-Match honoured?
        return run_server(cfg, config_paths)
    finally:
        # Also when start-up fails (bad config, port taken): no directory per attempt left in
        # /tmp. Only in the master: a forked worker unwinds through this frame when it exits.
        if os.getpid() == master:
            shutil.rmtree(metrics_dir, ignore_errors=True)


def run_server(cfg, config_paths) -> int:
    from .instance import claim

    # Before anything else touches the data directory: a server with other repositories or
    # downstreams already running on it refuses this one (angos.instance).
    instance = claim(cfg, config_paths)
    metrics_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or tempfile.mkdtemp(prefix="angos-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    drain = None
    if cfg.global_.job_queue is None and cfg.metadata.lock_strategy.kind == "memory":
        # A process-local lock guards one process only (config enforces workers = 1), so
        # that one web worker hosts the drain itself (angos.api.jobs, angos.queue.consumer).
        from .worker import JOB_MODULES

        os.environ["ANGOS_DRAIN_IN_WORKER"] = ",".join(JOB_MODULES)
    elif cfg.global_.job_queue is None:
        # Without [global.job_queue] the server drains the queues itself: one supervised
        # consumer process for the whole server (never one per gunicorn worker), sharing
        # PROMETHEUS_MULTIPROC_DIR so handler metrics show on /metrics. See angos.queue.drain.
        from .config import JobQueueConfig
        from .queue.layout import make_jobs_dir
        from .queue.drain import DrainSupervisor

        make_jobs_dir(cfg)  # the drain itself never creates a missing data root

        argv = [sys.executable, "-m", "angos.cli"]
        for path in config_paths:
            argv += ["-c", os.path.abspath(path)]
        drain = DrainSupervisor(argv + ["worker", "--in-process"], JobQueueConfig().drain_timeout_secs)
        drain.start()

    # Imported now, not in child_exit: gunicorn runs that hook from its SIGCHLD handler, which
    # may interrupt the master anywhere, an import of the same module included.
    from prometheus_client import multiprocess

    def child_exit(server, worker):
        multiprocess.mark_process_dead(worker.pid)

    def on_exit(server):
        if drain is not None:
            drain.stop()  # running jobs finish first; no consumer outlives the server
        shutil.rmtree(metrics_dir, ignore_errors=True)

    def post_fork(server, worker):
        # A forked worker inherits the master's signal handlers until its own
        # init_signals() runs (after the gevent import and patching). A SIGTERM
        # in that window would be queued in the child's copy of the arbiter and
        # lost, and the master would wait graceful_timeout before killing it.
        # Record it instead: a worker that is already not alive exits right
        # after booting.
        import signal

        signal.signal(signal.SIGTERM, lambda sig, frame: setattr(worker, "alive", False))

    from .reload import ConfigWatcher

    def notify():
        # New workers (forked with the new configuration) replace the old ones, which
        # finish their in-flight requests first: nothing is dropped.
        os.kill(os.getpid(), signal.SIGHUP)

    watcher = ConfigWatcher(config_paths, cfg, validate=_validate_live, notify=notify)
    from .ready import ReadyLine

    ready = ReadyLine(cfg)

    def when_ready(server):
        watcher.start()
        for name in ("handle_term", "handle_int", "handle_quit"):
            handler = getattr(server, name)

            def stopping_first(handler=handler):
                sdnotify.notify("STOPPING=1")
                if drain is not None:
                    # systemd (KillMode=control-group) and Ctrl-C signal every process at
                    # once, so the drain child may exit before on_exit runs; tell the
                    # supervisor now, so that exit is expected rather than a crash.
                    drain.stopping()
                handler()

            setattr(server, name, stopping_first)
        # gunicorn itself has just sent READY=1 (the sockets listen; connections wait in the
        # backlog until the workers forked next accept them); say what we serve.
        sdnotify.notify(f"STATUS=serving on {cfg.server.bind_address}:{cfg.server.port}")
        ready.start()

    def post_worker_init(worker):
        if worker.alive:  # not one told to stop while it booted: it would exit instead of serving
            ready.worker_up()  # the app is built and the worker accepts next: the master logs "ready on"

    drained_with = [cfg]

    def on_reload(server):
        sdnotify.reloading()
        # The drain child watches the files itself and gives each job the configuration current
        # when the job starts, so running jobs finish on theirs. Only a new pool size, or a
        # downstream removed (its live metric series belong to the child and must go with it),
        # needs a new child (it finishes its running jobs first).
        new = watcher.current
        if instance is not None and new is not drained_with[0]:
            try:
                instance.update(new)  # the record follows the configuration the server now runs
            except (OSError, AngosError) as exc:
                log.warning("could not record the new configuration in the data directory: %s", exc)
        if drain is not None and (_drain_pools(new) != _drain_pools(drained_with[0])
                                  or _downstreams(drained_with[0]) - _downstreams(new)):
            drain.restart()
        drained_with[0] = new
        sdnotify.notify("READY=1")

    hooks = {"child_exit": child_exit, "on_exit": on_exit, "post_fork": post_fork, "when_ready": when_ready,
             "on_reload": on_reload, "post_worker_init": post_worker_init}
    app = AngosApplication(cfg, config_paths, hooks, watcher)
    app.run()
    return 0


def _drain_pools(cfg) -> tuple[int, int, int]:
    g = cfg.global_
    return g.max_concurrent_replication_jobs, g.max_concurrent_cache_jobs, g.max_concurrent_webhook_jobs


def _downstreams(cfg) -> set[str]:
    return {ds.name for repo in cfg.repository.values() for ds in repo.downstream}


def _validate_live(cfg) -> None:
    """What start-up checks beyond the config schema, for a configuration arriving live."""
    from .startup_checks import validate

    validate(cfg)
