"""Wake-ups for replication status waiters, from the process that runs a job to the servers.

A job handler that changes a tag's status record publishes ``(namespace,
tag)`` (:func:`build_publisher`); a server request waiting for that tag
(``?wait=``) sleeps on a :class:`Subscription` until a wake-up for its tag
(or its namespace) arrives, then re-reads the records. The drain runs in
another process than the HTTP workers (the server's ``angos worker
--in-process`` child, or ``angos worker`` processes, possibly on other hosts),
so the wake-up crosses processes:

- with ``[global.job_queue] backend = "redis"`` (the one setup whose workers
  may run on other hosts) it is a Redis pub/sub message on
  :data:`CHANNEL` of the queue's Redis;
- otherwise every process that has waiters binds one Unix datagram socket in
  ``<jobs dir>/status-waiters/`` (the queue's local directory, see
  :func:`angos.queue.layout.jobs_dir`), and a publisher sends one datagram to
  each socket there, never blocking (a socket nobody reads any more is
  removed, a full one skipped).

A wake-up carries no state, only which tag to look at again, so one that is
lost (a full socket buffer, Redis restarting) delays a waiter at most until
its next re-check (:data:`RECHECK_SECS`, the backstop; never the main
mechanism). After Redis comes back every waiter is woken once to re-check.

In a server process each :class:`Waiters` hub has one listener (a greenlet
under gevent: waiting costs no worker capacity, only one small object per
waiter), started by the first subscription. :func:`release_waiters` wakes
every waiter of the process at once, for the server's graceful stop: a long
poll answers the state it has instead of holding the stop up.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
import weakref

from ..outage import redis_outage

log = logging.getLogger("angos.replication.notify")

CHANNEL = "angos:replication:status"
RECHECK_SECS = 5.0
SOCKETS_DIR = "status-waiters"
_MAX_PATH = 107  # sun_path holds 108 bytes including the terminating NUL


def _encode(ns: str, tag: str) -> bytes:
    return json.dumps([ns, tag], separators=(",", ":")).encode()


def _decode(data: bytes) -> tuple[str, str] | None:
    try:
        ns, tag = json.loads(data)
    except (ValueError, TypeError):
        return None
    return (ns, tag) if isinstance(ns, str) and isinstance(tag, str) else None


def _redis_url(cfg) -> str | None:
    jq = cfg.global_.job_queue
    return jq.url if jq is not None and jq.backend == "redis" else None


def _sockets_dir(cfg) -> str:
    from ..queue.layout import jobs_dir

    return os.path.join(jobs_dir(cfg), SOCKETS_DIR)


# ------------------------------------------------------------------ publishers


class _Dir:
    """A directory whose entries are addressed through an open descriptor when their full path
    would not fit a Unix socket address (``/proc/self/fd/<fd>/<name>`` is short whatever the path)."""

    def __init__(self, path: str):
        self.path = path
        self._fd: int | None = None

    def address(self, name: str) -> str:
        full = os.path.join(self.path, name)
        if len(full.encode()) <= _MAX_PATH:
            return full
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY)
        return f"/proc/self/fd/{self._fd}/{name}"


class SocketPublisher:
    """One datagram to every waiting process's socket in ``directory``."""

    def __init__(self, directory: str):
        self.dir = _Dir(directory)
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()

    def __call__(self, ns: str, tag: str) -> None:
        try:
            names = [n for n in os.listdir(self.dir.path) if n.startswith("w")]
        except FileNotFoundError:
            return  # nobody has ever waited on this box
        if not names:
            return
        msg = _encode(ns, tag)
        with self._lock:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                self._sock.setblocking(False)
            for name in names:
                try:
                    self._sock.sendto(msg, self.dir.address(name))
                except (ConnectionRefusedError, FileNotFoundError):
                    _unlink(os.path.join(self.dir.path, name))  # its process is gone
                except BlockingIOError:
                    pass  # that process is behind: its waiters re-check on their own
                except OSError as exc:
                    log.debug("status wake-up to %s failed: %s", name, exc)


class RedisPublisher:
    def __init__(self, url: str):
        self.url = url
        self._client = None
        self._warned = 0.0

    def __call__(self, ns: str, tag: str) -> None:
        import redis

        if self._client is None:
            self._client = redis.Redis.from_url(self.url, socket_timeout=2, socket_connect_timeout=2)
        try:
            self._client.publish(CHANNEL, _encode(ns, tag))
        except redis.RedisError as exc:
            if time.monotonic() - self._warned > 60:
                self._warned = time.monotonic()
                log.warning("replication status wake-ups are not reaching Redis (%s); waiters fall back to "
                            "re-checking every %.0fs", exc, RECHECK_SECS)


def build_publisher(cfg):
    """``publish(namespace, tag)`` for this configuration's transport."""
    url = _redis_url(cfg)
    return RedisPublisher(url) if url else SocketPublisher(_sockets_dir(cfg))


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


# ------------------------------------------------------------------ waiters


class Subscription:
    """Woken by any status change of ``(ns, tag)`` (``tag`` None: of any tag of ``ns``)."""

    def __init__(self, hub: "Waiters", ns: str, tag: str | None):
        self.hub = hub
        self.key = (ns, tag)
        self.event = threading.Event()

    def wait(self, timeout: float) -> bool:
        """Sleep until a wake-up or ``timeout``; True when woken. Clears the wake-up, so the caller
        reads the state *after* this returns and misses nothing that changes later."""
        woken = self.event.wait(max(timeout, 0.0))
        self.event.clear()
        return woken

    @property
    def released(self) -> bool:
        return self.hub.released

    def __enter__(self) -> "Subscription":
        return self

    def __exit__(self, *exc) -> None:
        self.hub._remove(self)


class Waiters:
    """The waiters of one process, and the listener that wakes them."""

    def __init__(self, cfg):
        self.redis_url = _redis_url(cfg)
        self.dir = _Dir(_sockets_dir(cfg))
        self.released = False
        self._subs: dict[tuple, set[Subscription]] = {}
        self._lock = threading.Lock()
        self._started = False
        self._sock: socket.socket | None = None
        self._name: str | None = None
        _HUBS.add(self)

    def subscribe(self, ns: str, tag: str | None = None) -> Subscription:
        """Register before reading the state: a change after the read then wakes the subscription."""
        sub = Subscription(self, ns, tag)
        with self._lock:
            self._subs.setdefault(sub.key, set()).add(sub)
            start = not self._started
            self._started = True
        if start:
            self._start()
        if self.released:
            sub.event.set()
        return sub

    def count(self) -> int:
        with self._lock:
            return sum(len(s) for s in self._subs.values())

    def _remove(self, sub: Subscription) -> None:
        with self._lock:
            subs = self._subs.get(sub.key)
            if subs is not None:
                subs.discard(sub)
                if not subs:
                    del self._subs[sub.key]

    def wake(self, ns: str, tag: str) -> None:
        with self._lock:
            subs = list(self._subs.get((ns, tag), ())) + list(self._subs.get((ns, None), ()))
        for sub in subs:
            sub.event.set()

    def wake_all(self) -> None:
        with self._lock:
            subs = [s for group in self._subs.values() for s in group]
        for sub in subs:
            sub.event.set()

    def release(self) -> None:
        """Wake every waiter now and from now on (the process is stopping)."""
        self.released = True
        self.wake_all()

    # -- the listener

    def _start(self) -> None:
        if self.redis_url:
            target = self._listen_redis
        else:
            try:
                self._bind()
            except OSError as exc:
                log.warning("replication status waiters cannot listen in %s (%s); they re-check every %.0fs "
                            "instead", self.dir.path, exc, RECHECK_SECS)
                return
            target = self._listen_socket
        threading.Thread(target=target, name="angos-status-waiters", daemon=True).start()

    def _bind(self) -> None:
        os.makedirs(self.dir.path, exist_ok=True)
        self._name = f"w{os.getpid()}-{uuid.uuid4().hex[:8]}"
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(self.dir.address(self._name))
        self._sock = sock
        import atexit

        atexit.register(_unlink, os.path.join(self.dir.path, self._name))

    def _listen_socket(self) -> None:
        while True:
            try:
                data = self._sock.recv(65536)
            except OSError:
                log.exception("replication status listener stopped; waiters re-check every %.0fs", RECHECK_SECS)
                return
            key = _decode(data)
            if key is not None:
                self.wake(*key)

    def _listen_redis(self) -> None:
        import redis

        pause = 1.0
        while True:
            try:
                client = redis.Redis.from_url(self.redis_url, socket_connect_timeout=5, health_check_interval=30)
                pubsub = client.pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(CHANNEL)
                redis_outage(self.redis_url).ok()
                self.wake_all()  # wake-ups sent while unsubscribed are lost: everyone re-checks once
                pause = 1.0
                while True:
                    msg = pubsub.get_message(timeout=5.0)
                    if msg and msg.get("type") == "message":
                        key = _decode(msg["data"])
                        if key is not None:
                            self.wake(*key)
            except redis.RedisError as exc:
                # One line per outage of this Redis (shared with the job queue and locks using it).
                redis_outage(self.redis_url).failed(exc)
                time.sleep(pause)
                pause = min(pause * 2, 30.0)


_HUBS: "weakref.WeakSet[Waiters]" = weakref.WeakSet()


def release_waiters() -> None:
    """Wake every waiter of this process (a server worker that is stopping)."""
    for hub in list(_HUBS):
        hub.release()
