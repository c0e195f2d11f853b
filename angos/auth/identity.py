"""Who is asking: the identity a request authenticated as.

Frozen and hashable: the access layer caches a prepared CEL context per
identity. ``anonymous`` means neither credentials (basic, or a registry token
naming an identity) nor a verified client certificate identified the caller
(a denied anonymous caller is challenged with 401; anybody else gets 403).
An identity looks the same whichever credential produced it, so the policy
cannot tell a token from the password it was issued for.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Identity:
    id: str | None = None
    username: str | None = None
    client_ip: str | None = None
    common_names: tuple[str, ...] = field(default=())
    organizations: tuple[str, ...] = field(default=())

    @property
    def anonymous(self) -> bool:
        return self.id is None and not self.common_names and not self.organizations


ANONYMOUS = Identity()
