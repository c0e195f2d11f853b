"""Connection bookkeeping for one server worker: slow or idle clients cannot hold every slot.

Role: decide which connections a gunicorn worker may accept, keep, or close,
so that clients that connect and then send nothing (or dribble a request)
cannot starve everybody else. Pure bookkeeping: no sockets, no gevent; the
worker (:class:`angos.server.SendfileGeventWorker`) owns the sockets and acts
on the decisions. Connections are opaque hashable keys (the worker uses the
handler greenlet).

Contract:

- A connection is *waiting* while it has no request being served (a fresh
  connection before its first request head is complete, or a keep-alive
  connection between requests) and *serving* otherwise. ``waiting(conn)`` and
  ``serving(conn)`` record the transitions; ``closed(conn)`` forgets it.
- ``opened(conn, ip)`` registers a new connection and returns
  ``(admitted, evict)``: ``evict`` lists connections the worker should close
  now, oldest-waiting first. At ``per_ip`` connections from one address, the
  address's own longest-waiting connection makes room for the new one; when
  none of them is waiting (all are being served) the new one is refused
  (``admitted`` is False, nothing is registered). When the worker's pool is
  then full, the longest-waiting connection of any address is closed too, so
  the pool never stays full of connections that are doing nothing: a
  server under a slow-connection flood keeps accepting and serving.
- Addresses in ``exempt`` (the configured trusted proxies, which carry many
  clients over their connections) have no per-address cap; they still count
  toward the pool.
- An evicted connection stops counting at once (its socket may take a moment
  to close), so a burst of new connections cannot push a cap past its limit by
  evicting the same connection repeatedly.
- ``candidates`` gives the waiting connections oldest first: the worker skips
  one whose next request has already arrived and calls ``evict`` on another.

The per-address cap is per worker process: gunicorn's workers do not share
state, so one address may hold up to ``workers × per_ip`` connections.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Hashable, Iterable, Iterator


class ConnectionTable:
    def __init__(self, pool_size: int, per_ip: int, exempt: Iterable = ()):
        self.pool_size = pool_size
        self.per_ip = per_ip
        self._exempt = tuple(exempt)
        self._ip: dict[Hashable, str | None] = {}
        self._per_ip: dict[str, int] = {}
        # Insertion order is the order connections started waiting: the first is the oldest.
        self._waiting: dict[Hashable, None] = {}
        self._exempt_cache: dict[str, bool] = {}

    # ------------------------------------------------------------ state changes

    def opened(self, conn: Hashable, ip: str | None,
               has_request: Callable[[Hashable], bool] = lambda conn: False) -> tuple[bool, list]:
        """Register a new connection; ``has_request(c)`` tells whether waiting ``c`` already received bytes."""
        evict = []
        capped = ip is not None and not self._is_exempt(ip)
        if capped and self._per_ip.get(ip, 0) >= self.per_ip:
            victim = self._first(self.candidates(ip), has_request)
            if victim is None:
                return False, []
            self.evict(victim)
            evict.append(victim)
        self._ip[conn] = ip if capped else None
        if capped:
            self._per_ip[ip] = self._per_ip.get(ip, 0) + 1
        self._waiting[conn] = None
        if len(self._ip) >= self.pool_size:
            victim = self._first((c for c in self.candidates() if c is not conn), has_request)
            if victim is not None:
                self.evict(victim)
                evict.append(victim)
        return True, evict

    def waiting(self, conn: Hashable) -> None:
        if conn in self._ip:
            self._waiting.pop(conn, None)
            self._waiting[conn] = None  # to the end: it is now the newest waiting connection

    def serving(self, conn: Hashable) -> None:
        self._waiting.pop(conn, None)

    def evict(self, conn: Hashable) -> None:
        """Stop counting ``conn`` (the worker is closing it)."""
        self._waiting.pop(conn, None)
        ip = self._ip.pop(conn, None)
        if ip is not None:
            left = self._per_ip[ip] - 1
            if left:
                self._per_ip[ip] = left
            else:
                del self._per_ip[ip]

    closed = evict

    # ------------------------------------------------------------ queries

    def candidates(self, ip: str | None = None) -> Iterator[Hashable]:
        """Waiting connections, longest-waiting first (only ``ip``'s when given)."""
        for conn in list(self._waiting):
            if ip is None or self._ip.get(conn) == ip:
                yield conn

    def is_waiting(self, conn: Hashable) -> bool:
        return conn in self._waiting

    def count(self, ip: str | None = None) -> int:
        return len(self._ip) if ip is None else self._per_ip.get(ip, 0)

    # ------------------------------------------------------------ helpers

    @staticmethod
    def _first(conns: Iterable[Hashable], has_request: Callable[[Hashable], bool]):
        for conn in conns:
            if not has_request(conn):
                return conn
        return None

    def _is_exempt(self, ip: str) -> bool:
        if not self._exempt:
            return False
        hit = self._exempt_cache.get(ip)
        if hit is None:
            try:
                addr = ipaddress.ip_address(ip)
            except ValueError:
                hit = False
            else:
                hit = any(addr in net for net in self._exempt if net.version == addr.version)
            if len(self._exempt_cache) < 4096:
                self._exempt_cache[ip] = hit
        return hit
