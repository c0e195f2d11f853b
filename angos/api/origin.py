"""Refuse state-changing requests that a browser marks as coming from another site.

A browser sends stored Basic credentials (and a client certificate) with any
request to this host, including a form or ``fetch`` another site triggers. So
every ``POST``, ``PUT``, ``PATCH`` and ``DELETE`` is checked before the access
policy runs, and refused with 403 ``DENIED`` when:

- ``Sec-Fetch-Site`` is present and is not ``same-origin`` or ``none`` (a
  sibling subdomain's ``same-site`` is refused too), or, without it,
- ``Origin`` is present and is not this server's own origin: scheme, host and
  port are all compared (``Origin: https://host`` on a plain-HTTP server is
  refused; ``null`` is refused).

Registry clients (skopeo, podman, docker, curl, replication peers) send
neither header and are unaffected. The web UI's forms (``/_ui/``) must carry
one of them (every current browser sends ``Origin`` with a form ``POST``), so
a request with neither is refused there.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import request

from ..oci.errors import Denied

UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_DEFAULT_PORT = {"http": 80, "https": 443}


def _origin_of(url: str) -> tuple[str, str, int] | None:
    try:
        parts = urlsplit(url)
        port = parts.port or _DEFAULT_PORT.get(parts.scheme)
    except ValueError:
        return None
    if not parts.scheme or not parts.hostname or port is None:
        return None
    return parts.scheme.lower(), parts.hostname.lower(), port


def cross_site() -> bool | None:
    """True when the browser marks this request as cross-site, False when it marks it same-origin,
    None when it carries no marker (not a browser, or a very old one)."""
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None:
        return site.strip().lower() not in ("same-origin", "none")
    origin = request.headers.get("Origin")
    if origin is None:
        return None
    own = _origin_of(f"{request.scheme}://{request.host}")
    return origin.strip() == "null" or own is None or _origin_of(origin.strip()) != own


def refuse_cross_site():
    """``before_request`` hook for the whole app."""
    if request.method not in UNSAFE:
        return None
    verdict = cross_site()
    if verdict or (verdict is None and request.path.startswith("/_ui/")):
        raise Denied("cross-site request refused: it came from another site's page"
                     if verdict else "a form post without Origin or Sec-Fetch-Site is refused")
    return None
