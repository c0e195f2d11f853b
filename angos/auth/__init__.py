"""Identities and access policy.

``AccessControl(cfg)`` authenticates a request into an :class:`Identity`
(:mod:`.authenticate`: basic credentials, OIDC tokens from :mod:`.oidc`,
registry tokens from :mod:`.token`, client certificates) and decides whether an action is allowed under the
global and repository policies (both must allow).
"""

from .access import AccessControl
from .identity import ANONYMOUS, Identity

__all__ = ["AccessControl", "Identity", "ANONYMOUS"]
