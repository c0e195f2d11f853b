"""Outbound HTTP requests whose answers are never read behind the caller's back.

``requests.Session.send`` told not to follow redirects still works out the
request a redirect would lead to (``Response.next``), and to do that it reads
the redirect answer's body to its end, however large: a remote answering
``307`` with an endless body would be read forever. :func:`send` goes to the
session's transport adapter directly, so nothing is read: the status and
headers are there, the body stays unread for the caller to read with a bound
(``resp.raw.read(limit)``) or to close. Redirects are never followed here;
callers that follow them do it themselves (:mod:`.client`).

Everything else is what ``Session.request`` does: the session's headers,
auth, certificate and proxy settings (``proxies`` given here first, then the
session's, then the environment's if the session trusts it) apply.
Exceptions are ``requests``' own.
"""

from __future__ import annotations


def send(session, method: str, url: str, *, timeout, headers: dict | None = None, data=None, auth=None,
         verify=True, cert=None, proxies: dict | None = None):
    # Imported here, not at the top: modules the master process loads (angos.auth) import this one,
    # and ssl must not be loaded before a gevent worker patches it (its TLS contexts break).
    import requests

    prepared = session.prepare_request(requests.Request(method, url, headers=headers, data=data, auth=auth))
    settings = session.merge_environment_settings(prepared.url, proxies or {}, True, verify, cert)
    return session.get_adapter(prepared.url).send(prepared, timeout=timeout, **settings)
