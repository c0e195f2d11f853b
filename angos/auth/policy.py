"""CEL access policies: compile at configuration load, evaluate per request.

Contract (SPEC section 6):

- :meth:`Policy.compile` turns an ``AccessPolicy`` config section into a
  :class:`Policy`, compiling every rule once. A rule that does not compile
  raises :class:`~angos.config.ConfigError` naming its key path
  (``global.access_policy.rules[2]``), its text and the parser's position.
- :meth:`Policy.allows` evaluates against a prepared :class:`cel.Context`:
  with ``default = "allow"`` the request is denied if any rule is true; with
  ``default = "deny"`` it is allowed if any rule is true.
- Rules are also type-checked at compile time against the declared
  variables (:data:`VARIABLES`, checked by :mod:`angos.auth.celtypes`): an
  undeclared name or field, operands no operator accepts, or a result that
  is not a boolean raise the same one-line :class:`~angos.config.ConfigError`
  as a syntax error (key path, rule text, reason). Such rules would deny
  every request at run time.
- Fail closed: a rule that raises (a missing key, a type error) or returns
  anything but a boolean denies the request in either mode, and a warning
  names the rule. Every rule is evaluated, not just up to the first match, so
  the outcome never depends on the order rules are written in: a broken rule
  denies even when an earlier rule already matched.
- :func:`identity_vars` and :func:`request_vars` build the two CEL variables.
  ``identity.*`` fields are always present (null / empty lists when unset;
  ``identity.oidc`` is null unless an OIDC token identified the caller, so
  rules guard it: ``identity.oidc != null && identity.oidc.claims[...]``);
  optional ``request.*`` fields are absent when they do not apply, so
  ``has(request.from)`` distinguishes a mount from anything else.

The engine is ``common-expression-language`` (module ``cel``, a binding of a
Rust CEL implementation). Converting Python values into CEL values is what
costs time (about 1 µs per string), not executing a compiled rule (well under
1 µs), so callers build the ``identity`` part of a context once per identity
and only add ``request`` per decision (see :mod:`angos.auth.access`).
"""

from __future__ import annotations

import logging
import re

import cel

from ..config import ConfigError
from ..log_throttle import Throttled
from .celtypes import BOOL, DYN, INT, STRING, CelTypeError, check, list_of, map_of, nullable, record

log = logging.getLogger("angos.auth.policy")

# What a rule may read: identity_vars() and request_vars() below, with their types. Every
# field angos.api.gate.request_fields() can set must be declared here, or rules using it
# are refused at load. identity.* fields are always present (null when unknown); request
# fields other than ``action`` are present only when they apply (rules test them with has()).
VARIABLES = {
    "identity": record("identity", {
        "id": nullable(STRING),
        "username": nullable(STRING),
        "client_ip": nullable(STRING),
        "certificate": record("identity.certificate", {
            "common_names": list_of(STRING),
            "organizations": list_of(STRING),
        }),
        # null unless an OIDC token identified the caller; then the provider's name and every claim
        # of the token (values of any JSON type: rules index them, e.g. claims['repository']).
        "oidc": nullable(record("identity.oidc", {
            "provider": STRING,
            "claims": map_of(STRING, DYN),
        })),
    }),
    "request": record("request", {
        "action": STRING,
        "namespace": STRING,
        "reference": STRING,
        "digest": STRING,
        "uuid": STRING,
        "from": STRING,
        "n": INT,
        "last": STRING,
        "artifact_type": STRING,
        "queue": STRING,
        "tags": list_of(STRING),
        "cache_fill": BOOL,
    }),
}

# A failing rule is logged at most this often (seconds), so a broken rule under
# load cannot flood the journal; suppressed occurrences are counted in the next line.
WARN_INTERVAL = 10.0

_POSITION = re.compile(r"ERROR: <input>:(\d+:\d+): ([^\n]*)")


def _compile_error(where: str, source: str, exc: Exception) -> ConfigError:
    text = str(exc)
    m = _POSITION.search(text)
    detail = f"at {m.group(1)}: {m.group(2)}" if m else text.splitlines()[0] if text else type(exc).__name__
    return ConfigError(f"{where}: invalid CEL rule {source!r} {detail}")


class Rule:
    """One compiled rule and where it came from (for error messages and logs)."""

    __slots__ = ("where", "source", "program", "_warned")

    def __init__(self, where: str, source: str):
        self.where = where
        self.source = source
        try:
            self.program = cel.compile(source)
        except Exception as exc:  # noqa: BLE001 - the binding raises ValueError, be robust to others
            raise _compile_error(where, source, exc) from None
        try:
            check(source, VARIABLES)
        except CelTypeError as exc:
            raise ConfigError(f"{where}: invalid CEL rule {source!r}: {exc}") from None
        self._warned = Throttled(WARN_INTERVAL)

    def warn(self, reason: str) -> None:
        suppressed = self._warned.allow()
        if suppressed is None:
            return
        more = f" ({suppressed} similar failures suppressed)" if suppressed else ""
        log.warning("access policy rule %s %r denied the request (fail closed): %s%s",
                    self.where, self.source, reason, more)


class Policy:
    """``default`` plus compiled rules; immutable once built."""

    __slots__ = ("where", "default_allow", "rules")

    def __init__(self, where: str, default: str, rules: tuple[Rule, ...]):
        self.where = where
        self.default_allow = default == "allow"
        self.rules = rules

    @classmethod
    def compile(cls, section, where: str) -> "Policy":
        """Build from a config ``AccessPolicy``; ``where`` is its key path."""
        rules = tuple(Rule(f"{where}.rules[{i}]", src) for i, src in enumerate(section.rules))
        return cls(where, section.default, rules)

    def allows(self, ctx: "cel.Context") -> bool:
        if not self.rules:
            return self.default_allow
        matched = False
        failed: list[tuple[Rule, str]] = []
        for rule in self.rules:
            try:
                result = rule.program.execute(ctx)
            except Exception as exc:  # noqa: BLE001 - any evaluation error fails closed
                failed.append((rule, f"evaluation error: {type(exc).__name__}: {exc}"))
                continue
            if result is True:
                matched = True
            elif result is not False:
                failed.append((rule, f"returned {type(result).__name__} {result!r}, not a boolean"))
        if failed:
            # Logged after the loop: evaluation above touches no I/O, so a caller
            # holding a shared context across it is never interleaved under gevent.
            for rule, reason in failed:
                rule.warn(reason)
            return False
        return not matched if self.default_allow else matched


def identity_vars(identity) -> dict:
    """The ``identity`` CEL variable: every field present, null/empty when unset."""
    return {
        "id": identity.id,
        "username": identity.username,
        "client_ip": identity.client_ip,
        "certificate": {
            "common_names": list(identity.common_names),
            "organizations": list(identity.organizations),
        },
        "oidc": None if identity.oidc is None else {
            "provider": identity.oidc.provider,
            "claims": identity.oidc.claims,
        },
    }


def request_vars(fields: dict) -> dict:
    """The ``request`` CEL variable: ``action`` always, other fields only when set."""
    return {k: v for k, v in fields.items() if v is not None}
