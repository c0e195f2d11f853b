"""Where a local namespace lands on a downstream, and which downstreams apply.

URL mapping (SPEC 8.1): a bare-host ``url`` mirrors the namespace verbatim; a
URL path becomes the namespace prefix that replaces the repository prefix
(``<repo>/x`` → ``<path>/x``, ``<repo>`` → ``<path>``). The OCI API is always
at ``/v2/`` on the downstream's root, so the path never reaches the HTTP path.

A downstream whose mapping points back at the same namespace on this very
instance is a self-loop and is suppressed.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import urlsplit


@dataclass(frozen=True)
class Target:
    base_url: str      # scheme://host[:port], no trailing slash
    namespace: str     # the namespace on the downstream


def split_url(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    base = f"{parts.scheme}://{parts.netloc}"
    return base, parts.path.strip("/")


def remote_namespace(repo_key: str, namespace: str, url: str) -> Target:
    base, prefix = split_url(url)
    if not prefix:
        return Target(base, namespace)
    if namespace == repo_key:
        return Target(base, prefix)
    return Target(base, prefix + namespace[len(repo_key):])


def local_namespace(repo_key: str, remote: str, url: str) -> str | None:
    """The local namespace of ``repo_key`` that :func:`remote_namespace` maps onto ``remote``
    through ``url``; None when no namespace of the repository lands there."""
    _, prefix = split_url(url)
    if not prefix:
        return remote if remote == repo_key or remote.startswith(repo_key + "/") else None
    if remote == prefix:
        return repo_key
    if remote.startswith(prefix + "/"):
        return repo_key + remote[len(prefix):]
    return None


def matches_filter(namespace: str, patterns: tuple[str, ...]) -> bool:
    return not patterns or any(re.search(p, namespace) for p in patterns)


@lru_cache(maxsize=256)
def _local_addresses() -> frozenset[str]:
    names = {"localhost", socket.gethostname(), socket.getfqdn()}
    addrs = {"127.0.0.1", "::1", "0.0.0.0", "::"}
    for name in list(names):
        try:
            for info in socket.getaddrinfo(name, None):
                addrs.add(info[4][0])
        except OSError:
            pass
    return frozenset(names | addrs)


def _is_local_host(host: str) -> bool:
    host = host.strip("[]").lower()
    if host in _local_addresses():
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        try:
            return any(ipaddress.ip_address(i[4][0]).is_loopback for i in socket.getaddrinfo(host, None))
        except (OSError, ValueError):
            return False


def is_self_loop(target: Target, namespace: str, bind_address: str, port: int) -> bool:
    """True when ``target`` is this instance's own ``namespace``: pushing there would be a no-op loop."""
    if target.namespace != namespace:
        return False
    parts = urlsplit(target.base_url)
    target_port = parts.port or (443 if parts.scheme == "https" else 80)
    if target_port != port:
        return False
    host = parts.hostname or ""
    return _is_local_host(host) or host == bind_address.strip("[]")
