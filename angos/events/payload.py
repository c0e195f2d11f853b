"""The JSON a webhook receives, and its signature.

The body is one object: ``id`` (the activity's, the same for every receiver
and every retry: receivers dedupe on it), ``timestamp`` (RFC 3339 UTC),
``kind``, ``namespace``, ``repository`` (the configured repository key the
namespace belongs to), ``digest``, ``reference``, ``tag`` and ``actor``
(``kind``: ``user``, ``anonymous`` or ``internal``; ``id``, ``username``,
``client_ip``; ``provider`` for an OIDC caller; ``origin`` for replication). Fields that do not apply are
absent, never null. Serialised with sorted keys and no spaces, so a queued
delivery sends the same bytes on every attempt.

With a ``token`` the request carries ``Authorization: Bearer <token>`` and
``X-Registry-Signature-256: sha256=<hex HMAC-SHA256 of the body, keyed with
the token>``.
"""

from __future__ import annotations

import hashlib
import hmac
import json

from ..registry.events import Activity

CONTENT_TYPE = "application/json"


def event_document(act: Activity, repository: str | None) -> dict:
    doc = {"id": act.id, "timestamp": act.timestamp, "kind": act.kind, "namespace": act.namespace,
           "repository": repository, "digest": act.digest, "reference": act.reference, "tag": act.tag}
    if act.actor is not None:
        a = act.actor
        doc["actor"] = {k: v for k, v in (("kind", a.kind), ("id", a.id), ("username", a.username),
                                          ("client_ip", a.client_ip), ("provider", a.provider),
                                          ("origin", a.origin)) if v is not None}
    return {k: v for k, v in doc.items() if v is not None}


def encode(doc: dict) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def signature(token: str, body: bytes) -> str:
    return "sha256=" + hmac.new(token.encode(), body, hashlib.sha256).hexdigest()


def headers(token: str | None, kind: str, event_id: str, body: bytes) -> dict:
    out = {"Content-Type": CONTENT_TYPE, "X-Registry-Event": kind, "X-Registry-Event-Id": event_id}
    if token:
        out["Authorization"] = f"Bearer {token}"
        out["X-Registry-Signature-256"] = signature(token, body)
    return out
