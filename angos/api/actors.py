"""Who is asking, as the registry reports it: the :class:`~angos.registry.events.Actor` of this
request, built from the identity the access gate resolved (``g.identity``). A caller with no
identity id but a verified client certificate is a ``user`` named by its first common name; an
OIDC caller is a ``user`` with its ``provider`` and its token's ``sub`` as ``username`` (never an
``id``: ids name ``[auth.identity.<id>]`` entries)."""

from __future__ import annotations

from flask import g, request

from ..registry.events import Actor


def current_actor() -> Actor:
    ident = g.get("identity")
    if ident is None:
        return Actor("anonymous", client_ip=request.remote_addr)
    if ident.anonymous:
        return Actor("anonymous", client_ip=ident.client_ip)
    if ident.oidc is not None:
        sub = ident.oidc.claims.get("sub")
        return Actor("user", None, sub if isinstance(sub, str) else None, ident.client_ip,
                     provider=ident.oidc.provider)
    username = ident.username or (ident.common_names[0] if ident.common_names else None)
    return Actor("user", ident.id, username, ident.client_ip)
