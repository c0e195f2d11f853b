"""Who is asking: the identity a request authenticated as.

Frozen and hashable: the access layer caches a prepared CEL context per
identity. ``anonymous`` means neither credentials (basic, an OIDC token, or a
registry token naming an identity) nor a verified client certificate
identified the caller (a denied anonymous caller is challenged with 401;
anybody else gets 403). An identity looks the same whichever credential
produced it, so the policy cannot tell a token from the password (or the OIDC
token) it was issued for.

An OIDC caller (:mod:`angos.auth.oidc`) has ``oidc`` set and no ``id`` or
``username``: those name ``[auth.identity.<id>]`` entries, and a token's
``sub`` from some issuer must never pass for one of them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property


@dataclass(frozen=True)
class Oidc:
    """A verified OIDC token's provider (the ``[auth.oidc.<name>]`` name) and claims.

    ``claims_json`` is the claim map as canonical JSON (sorted keys, no spaces): hashable, and
    equal for equal claims. ``expires_at`` (Unix seconds) is when the token stops being accepted;
    it is not part of who the caller is (it neither compares nor hashes)."""
    provider: str
    claims_json: str
    expires_at: float = field(default=0.0, compare=False, hash=False)

    @classmethod
    def of(cls, provider: str, claims: dict, expires_at: float) -> "Oidc":
        return cls(provider, json.dumps(claims, sort_keys=True, separators=(",", ":"), ensure_ascii=False),
                   expires_at)

    @cached_property
    def claims(self) -> dict:
        return json.loads(self.claims_json)


@dataclass(frozen=True)
class Identity:
    id: str | None = None
    username: str | None = None
    client_ip: str | None = None
    common_names: tuple[str, ...] = field(default=())
    organizations: tuple[str, ...] = field(default=())
    oidc: Oidc | None = None

    @property
    def anonymous(self) -> bool:
        return self.id is None and self.oidc is None and not self.common_names and not self.organizations


ANONYMOUS = Identity()
