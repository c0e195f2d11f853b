"""The access gate: every route declares its action; the policy runs before the handler.

``@action("get-blob")`` marks a view. ``check_access`` (a ``before_request``
hook) authenticates the caller, fills the CEL request fields from the URL and
query, and raises UNAUTHORIZED (anonymous) or DENIED (authenticated) when the
policy refuses. Views read the identity from ``g.identity``.
"""

from __future__ import annotations

from flask import current_app, g, request

from ..oci.errors import Denied, Unauthorized

_FIELDS = {"name": "namespace", "digest": "digest", "reference": "reference", "uuid": "uuid"}
_QUERY = {"from": "from", "n": "n", "last": "last", "artifactType": "artifact_type", "queue": "queue"}


def action(name: str):
    def mark(view):
        view.angos_action = name
        return view
    return mark


def access():
    return current_app.extensions["angos.access"]


def client_ip() -> str | None:
    return request.remote_addr


def request_fields(act: str) -> dict:
    fields: dict = {"action": act}
    for key, value in (request.view_args or {}).items():
        if key in _FIELDS:
            fields[_FIELDS[key]] = value
    for key, target in _QUERY.items():
        value = request.args.get(key)
        if value is not None:
            fields[target] = int(value) if key == "n" and value.isdigit() else value
    if "mount" in request.args:
        fields["digest"] = request.args["mount"]
    return fields


def check_access():
    view = current_app.view_functions.get(request.endpoint) if request.endpoint else None
    act = getattr(view, "angos_action", None)
    if act is None:
        return None  # unknown routes fall through to the 404/405 handlers
    if act == "start-upload" and "mount" in request.args:
        act = "mount-blob"  # one endpoint, two actions: the policy sees which
    ac = access()
    identity = ac.authenticate(request.headers.get("Authorization"), client_ip())
    g.identity = identity
    g.action = act
    fields = request_fields(act)
    g.request_fields = fields
    if not ac.is_allowed(identity, act, fields):
        if identity.anonymous:
            raise Unauthorized(f"authentication required for {act}")
        raise Denied(f"{act} denied")
    return None


def can(act: str, **fields) -> bool:
    """Ask the policy about another action for the current caller (e.g. mount's source read)."""
    base = {"action": act, **fields}
    return access().is_allowed(g.identity, act, base)
