"""Access control: who is asking, and may they do this.

``AccessControl(cfg)`` is built from one configuration and never changes; a
config reload builds a new one (which also empties the credentials cache).

- Construction validates everything up front and raises
  :class:`~angos.config.ConfigError` naming the key: every identity's argon2id
  hash (:mod:`angos.auth.basic`) and every CEL rule of the global and
  repository policies (:mod:`angos.auth.policy`). ``angos server`` builds one
  before forking so a bad file fails start-up with one line.
- ``authenticate(authorization, client_ip, common_names, organizations)``
  returns the caller's :class:`Identity` through
  :class:`~angos.auth.authenticate.Authenticator` (basic credentials, an
  OIDC token of an ``[auth.oidc.<name>]`` provider (:mod:`angos.auth.oidc`),
  a registry token when ``tokens`` is given, or nothing for anonymous; wrong
  credentials raise :class:`~angos.oci.errors.Unauthorized`, a throttled
  check :class:`~angos.oci.errors.TooManyRequests`).
- ``is_allowed(identity, action, fields)`` runs the global policy (when
  ``[global.access_policy]`` exists), then the policy of the repository the
  namespace belongs to (when it has one); all that apply must allow, and a
  request no policy applies to is allowed. ``fields`` are the request fields
  (``action`` included). ``evaluate`` is the same decision without the memo.
- ``webhooks``: the authorization webhooks (:mod:`angos.auth.webhook_authz`)
  the access gate asks after the policy allows.

Cost: a rule is a pure function of ``identity`` and ``request`` and the
policies never change for this object, so decisions are memoised per
(identity, request fields) in a bounded table — a client pulling the same
manifest again pays a dict lookup. A miss reuses a per-identity
:class:`cel.Context` that already holds the converted ``identity`` variable
and only adds ``request`` (converting Python values into CEL is what costs,
not running a compiled rule); policies without rules are decided without
touching CEL. The contexts are shared, so filling ``request`` and evaluating
happen under one lock (uncontended under gevent, where nothing in between
yields). A failing rule denies; its warning is logged when the decision is
computed, and repeats of a memoised denial are not logged again.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

import cel

from ..config import _join
from .authenticate import Authenticator
from .basic import BasicAuth
from .identity import Identity
from .oidc import OidcVerifier
from .policy import Policy, identity_vars, request_vars
from .webhook_authz import Webhooks

MAX_CONTEXTS = 4096
MAX_DECISIONS = 16384


class AccessControl:
    def __init__(self, cfg, tokens=None):
        """``tokens``: a :class:`~angos.auth.token.TokenService` when bearer tokens are accepted."""
        self.cfg = cfg
        self.basic = BasicAuth(cfg.auth.identity, limits=cfg.auth)
        self.tokens = tokens
        self.oidc = OidcVerifier(cfg.auth.oidc)  # builds no connection: the keys are fetched on first use
        self.authenticator = Authenticator(self.basic, tokens, self.oidc)
        # No [global.access_policy] table: no global policy (repository policies still apply).
        self.global_policy = (Policy.compile(cfg.global_.access_policy, "global.access_policy")
                              if cfg.global_.access_policy is not None else None)
        self.repo_policies: dict[str, Policy] = {}
        for key, repo in cfg.repository.items():
            if repo.access_policy is not None:
                where = _join("repository", key) + ".access_policy"
                self.repo_policies[key] = Policy.compile(repo.access_policy, where)
        self._contexts: OrderedDict[Identity, cel.Context] = OrderedDict()
        self._lock = threading.Lock()
        self._repo_cache: dict[str, Policy | None] = {}
        self._decisions: dict[tuple, bool] = {}
        self.webhooks = Webhooks(cfg)
        # Whether any policy or authorization webhook could refuse an anonymous caller: only then is a
        # credential-less GET /v2/ challenged (angos.api.gate), so clients learn where to get a token.
        policies = [p for p in (self.global_policy, *self.repo_policies.values()) if p is not None]
        self.challenges_anonymous = any(p.rules or not p.default_allow for p in policies) or self.webhooks.active

    # ------------------------------------------------------------ authentication

    def authenticate(self, authorization: str | None, client_ip: str | None,
                     common_names: tuple[str, ...] = (), organizations: tuple[str, ...] = ()) -> Identity:
        """The caller's identity (see :mod:`angos.auth.authenticate`)."""
        return self.authenticator.authenticate(authorization, client_ip, common_names, organizations)

    # ------------------------------------------------------------ authorisation

    def policy_for(self, namespace: str | None) -> Policy | None:
        """The repository policy governing ``namespace`` (None: global policy alone)."""
        if not namespace or not self.repo_policies:
            return None
        try:
            return self._repo_cache[namespace]
        except KeyError:
            pass
        key, _ = self.cfg.repository_for(namespace)
        policy = self.repo_policies.get(key) if key is not None else None
        if len(self._repo_cache) < MAX_CONTEXTS:
            self._repo_cache[namespace] = policy
        return policy

    def is_allowed(self, identity: Identity, action: str, fields: dict) -> bool:
        """The decision for this caller and request, memoised (see the module docstring)."""
        if "action" not in fields:
            fields = {**fields, "action": action}
        try:
            key = (identity, tuple(fields.items()))
            return self._decisions[key]
        except KeyError:
            pass
        except TypeError:  # an unhashable field value: decide without the memo
            return self.evaluate(identity, action, fields)
        allowed = self.evaluate(identity, action, fields)
        if len(self._decisions) >= MAX_DECISIONS:
            self._decisions.clear()  # cheap and rare; the hot keys come straight back
        self._decisions[key] = allowed
        return allowed

    def grants_explicitly(self, identity: Identity, action: str, fields: dict) -> bool:
        """Allowed, and by a rule: some applicable policy denies by default (so one of its rules
        matched). An allow-all policy never grants an action explicitly."""
        policies = [p for p in (self.global_policy, self.policy_for(fields.get("namespace"))) if p is not None]
        return any(not p.default_allow for p in policies) and self.is_allowed(identity, action, fields)

    def evaluate(self, identity: Identity, action: str, fields: dict) -> bool:
        """Run the policies now (no memo): global, then the namespace's repository policy."""
        policies = [p for p in (self.global_policy, self.policy_for(fields.get("namespace"))) if p is not None]
        if all(not p.rules for p in policies):  # also: no policy at all applies → allowed
            return all(p.default_allow for p in policies)
        if "action" not in fields:
            fields = {**fields, "action": action}
        request = request_vars(fields)
        with self._lock:
            ctx = self._context(identity)
            ctx.add_variable("request", request)
            return all(p.allows(ctx) for p in policies)

    def _context(self, identity: Identity) -> "cel.Context":
        ctx = self._contexts.get(identity)
        if ctx is not None:
            self._contexts.move_to_end(identity)
        else:
            ctx = cel.Context({"identity": identity_vars(identity)})
            self._contexts[identity] = ctx
            if len(self._contexts) > MAX_CONTEXTS:
                self._contexts.popitem(last=False)
        return ctx
