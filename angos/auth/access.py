"""Access decisions: the global policy and the namespace's repository policy
must both allow an action.

A policy is ``default = "allow" | "deny"`` plus CEL ``rules``. Until CEL rules
are wired (identity/policy work), a policy with rules is rejected at start-up
so nothing silently ignores an operator's rule.
"""

from __future__ import annotations

from ..config import ConfigError
from .identity import ANONYMOUS, Identity


class AccessControl:
    def __init__(self, cfg):
        self.cfg = cfg
        policies = [("global.access_policy", cfg.global_.access_policy)]
        policies += [(f'repository."{k}".access_policy', r.access_policy)
                     for k, r in cfg.repository.items() if r.access_policy is not None]
        for where, policy in policies:
            if policy.rules:
                raise ConfigError(f"{where}.rules: CEL rules are not supported by this build yet")

    def authenticate(self, authorization: str | None, client_ip: str | None) -> Identity:
        return Identity(client_ip=client_ip) if client_ip else ANONYMOUS

    def is_allowed(self, identity: Identity, action: str, fields: dict) -> bool:
        if self.cfg.global_.access_policy.default != "allow":
            return False
        ns = fields.get("namespace")
        if ns:
            _, repo = self.cfg.repository_for(ns)
            if repo is not None and repo.access_policy is not None:
                return repo.access_policy.default == "allow"
        return True
