"""Who is asking: the identity a request authenticated as."""

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
        return self.id is None and not self.common_names


ANONYMOUS = Identity()
