"""Static type checking of CEL rules against declared variables.

Role: refuse, when the configuration loads, access-policy rules that parse but
can never work: a field that does not exist (``identity.idd``), a name that is
not declared (``request.action == get-manifest`` reads variables ``get`` and
``manifest``), a result that is not a boolean (``identity.id``), or operands
that no operator accepts (``request.n == '10'``). The CEL engine in use (the
``cel`` binding) compiles syntax only, and such rules then deny every request
at run time.

Contract:

- :func:`check(source, variables)` parses ``source`` (already accepted by
  ``cel.compile``) and type-checks it against ``variables`` (name → type, see
  the type constructors below). It returns None when the rule is a boolean
  over declared names and fields and raises :class:`CelTypeError` with a
  one-line reason otherwise.
- It only refuses what cannot work with the engine's own semantics: functions
  and methods are the ones the engine provides (``size``, ``contains``,
  ``startsWith``, ``endsWith``, ``matches``, conversions, timestamp and
  duration getters, the ``all``/``exists``/``exists_one``/``filter``/``map``
  and ``has`` macros); ``==`` across numeric types and comparisons with
  ``null`` of nullable fields are fine; ``dyn(...)`` opts out of checking. A
  construct this parser does not know is accepted unchecked rather than
  refused (the engine already accepted its syntax).
- Types: ``BOOL``, ``INT``, ``UINT``, ``DOUBLE``, ``STRING``, ``BYTES``,
  ``NULL``, ``TIMESTAMP``, ``DURATION``, ``TYPE``, ``DYN``; ``list_of(t)``,
  ``map_of(k, v)``, ``nullable(t)`` (a value or null: comparisons with null
  and the value's operations both pass), ``record(name, fields)`` (an object
  whose fields are known; another field is an error).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .celparse import Parser, Unsupported


class CelTypeError(Exception):
    """A rule that parses but cannot work; the message is one line."""


# ---------------------------------------------------------------- types

@dataclass(frozen=True)
class T:
    kind: str
    args: tuple = ()
    name: str = ""
    fields: dict = field(default_factory=dict, compare=False, hash=False)

    def __str__(self) -> str:
        if self.kind == "list":
            return f"list({self.args[0]})"
        if self.kind == "map":
            return f"map({self.args[0]}, {self.args[1]})"
        if self.kind == "nullable":
            return f"{self.args[0]} or null"
        if self.kind == "record":
            return self.name
        return self.kind


BOOL, INT, UINT, DOUBLE, STRING, BYTES = T("bool"), T("int"), T("uint"), T("double"), T("string"), T("bytes")
NULL, TIMESTAMP, DURATION, TYPE, DYN = T("null"), T("timestamp"), T("duration"), T("type"), T("dyn")
NUMERIC = (INT, UINT, DOUBLE)


def list_of(t: T) -> T:
    return T("list", (t,))


def map_of(k: T, v: T) -> T:
    return T("map", (k, v))


def nullable(t: T) -> T:
    return T("nullable", (t,))


def record(name: str, fields: dict) -> T:
    return T("record", (), name, dict(fields))


def _strip(t: T) -> T:
    return t.args[0] if t.kind == "nullable" else t


# ---------------------------------------------------------------- checker

_TYPE_NAMES = {"int", "uint", "double", "bool", "string", "bytes", "list", "map", "null_type", "type"}
_CONVERSIONS = {"int": INT, "uint": UINT, "double": DOUBLE, "string": STRING, "bytes": BYTES,
                "timestamp": TIMESTAMP, "duration": DURATION, "dyn": DYN, "type": TYPE}
_STRING_TESTS = ("contains", "startsWith", "endsWith", "matches")
_TIMESTAMP_GETTERS = ("getFullYear", "getMonth", "getDate", "getDayOfMonth", "getDayOfWeek", "getDayOfYear",
                      "getHours", "getMinutes", "getSeconds", "getMilliseconds")
_DURATION_GETTERS = ("getHours", "getMinutes", "getSeconds", "getMilliseconds")
_MACROS = ("all", "exists", "exists_one", "filter", "map")


def check(source: str, variables: dict[str, T]) -> None:
    try:
        tree = Parser(source).parse()
    except Unsupported:
        return  # the engine accepted this syntax; leave it to the run-time checks
    result = _Checker(variables).type_of(tree)
    if result not in (BOOL, DYN):
        raise CelTypeError(f"the rule evaluates to {result}, not a boolean")


def _eq_ok(a: T, b: T) -> bool:
    if DYN in (a, b):
        return True
    if a == NULL or b == NULL:
        other = b if a == NULL else a
        return other == NULL or other.kind == "nullable"
    a, b = _strip(a), _strip(b)
    if a in NUMERIC and b in NUMERIC:
        return True
    if a.kind == b.kind == "list":
        return _eq_ok(a.args[0], b.args[0])
    if a.kind == b.kind == "map":
        return _eq_ok(a.args[0], b.args[0]) and _eq_ok(a.args[1], b.args[1])
    return a == b


def _a(t: T) -> str:
    text = str(t)
    return ("an " if text[:1] in "aeio" else "a ") + text  # "a uint"


def _join(types: list[T]) -> T:
    return types[0] if types and all(t == types[0] for t in types) else DYN


class _Checker:
    def __init__(self, variables: dict[str, T]):
        self.scopes = [dict(variables)]

    def lookup(self, name: str) -> T:
        for scope in reversed(self.scopes):
            if name in scope:
                return scope[name]
        if name in _TYPE_NAMES:
            return TYPE
        declared = ", ".join(sorted(self.scopes[0]))
        raise CelTypeError(f"undeclared name {name!r} (declared: {declared}; quote string literals)")

    def type_of(self, node) -> T:
        return getattr(self, "_" + node[0])(*node[1:])

    def _lit(self, kind: str) -> T:
        return T(kind)

    def _ident(self, name: str) -> T:
        return self.lookup(name)

    def _list(self, items) -> T:
        return list_of(_join([self.type_of(i) for i in items]))

    def _map(self, entries) -> T:
        return map_of(_join([self.type_of(k) for k, _ in entries]), _join([self.type_of(v) for _, v in entries]))

    def _select(self, operand, name: str) -> T:
        t = _strip(self.type_of(operand))
        if t == DYN:
            return DYN
        if t.kind == "record":
            if name not in t.fields:
                raise CelTypeError(f"{t.name} has no field {name!r} (fields: {', '.join(sorted(t.fields))})")
            return t.fields[name]
        if t.kind == "map" and _eq_ok(t.args[0], STRING):
            return t.args[1]
        raise CelTypeError(f"{_a(t)} has no fields (selecting {name!r})")

    def _index(self, operand, index) -> T:
        t, i = _strip(self.type_of(operand)), self.type_of(index)
        if t == DYN:
            return DYN
        if t.kind == "list" and _strip(i) in (INT, UINT, DYN):
            return t.args[0]
        if t.kind == "map" and _eq_ok(t.args[0], i):
            return t.args[1]
        raise CelTypeError(f"cannot index {_a(t)} with {_a(i)}")

    def _unary(self, op: str, operand) -> T:
        t = _strip(self.type_of(operand))
        if op == "!" and t in (BOOL, DYN):
            return BOOL
        if op == "-" and t in (INT, DOUBLE, DURATION, DYN):
            return t
        raise CelTypeError(f"{op!r} cannot be applied to {_a(t)}")

    def _cond(self, cond, then, other) -> T:
        if _strip(self.type_of(cond)) not in (BOOL, DYN):
            raise CelTypeError("the condition of '? :' is not a boolean")
        return _join([self.type_of(then), self.type_of(other)])

    def _binary(self, op: str, left, right) -> T:
        a, b = self.type_of(left), self.type_of(right)
        if op in ("&&", "||"):
            for t in (a, b):
                if _strip(t) not in (BOOL, DYN):
                    raise CelTypeError(f"{op!r} needs booleans, got {_a(t)}")
            return BOOL
        if op in ("==", "!="):
            if not _eq_ok(a, b):
                if NULL in (a, b):
                    other = b if a == NULL else a
                    hint = "" if other.kind == "record" else \
                        " (an optional request field is absent, not null: test it with has())"
                    raise CelTypeError(f"{_a(other)} is never null{hint}")
                raise CelTypeError(f"{_a(a)} is never equal to {_a(b)}, so {op!r} is always "
                                   f"{'false' if op == '==' else 'true'}")
            return BOOL
        if op == "in":
            container = _strip(b)
            if container == DYN or (container.kind == "list" and _eq_ok(a, container.args[0])) or (
                    container.kind == "map" and _eq_ok(a, container.args[0])):
                return BOOL
            raise CelTypeError(f"'in' cannot look for {_a(a)} in {_a(b)}")
        sa, sb = _strip(a), _strip(b)
        if op in ("<", "<=", ">", ">="):
            if DYN in (sa, sb) or (sa in NUMERIC and sb in NUMERIC) or (
                    sa == sb and sa in (STRING, BYTES, BOOL, TIMESTAMP, DURATION)):
                return BOOL
            raise CelTypeError(f"{op!r} cannot compare {_a(a)} with {_a(b)}")
        return self._arithmetic(op, sa, sb)

    def _arithmetic(self, op: str, a: T, b: T) -> T:
        if DYN in (a, b):
            return DYN
        if a == b and (a in NUMERIC and (op != "%" or a != DOUBLE)):
            return a
        if op == "+":
            if a == b and a in (STRING, BYTES, DURATION):
                return a
            if a.kind == b.kind == "list":
                return list_of(_join([a.args[0], b.args[0]]))
            if {a, b} == {TIMESTAMP, DURATION}:
                return TIMESTAMP
        if op == "-":
            if a == b == TIMESTAMP or a == b == DURATION:
                return DURATION
            if (a, b) == (TIMESTAMP, DURATION):
                return TIMESTAMP
        raise CelTypeError(f"{op!r} cannot be applied to {_a(a)} and {_a(b)}")

    # ------------------------------------------------------------ calls and macros

    def _call(self, target, name: str, args) -> T:
        if target is None:
            return self._function(name, args)
        if name in _MACROS and len(args) in (2, 3) and args[0][0] == "ident":
            return self._macro(target, name, args)
        if target == ("ident", "optional") and "optional" not in self.scopes[0]:
            for a in args:
                self.type_of(a)
            return DYN
        t = _strip(self.type_of(target))
        types = [self.type_of(a) for a in args]
        if name == "size" and not args and (t == DYN or t in (STRING, BYTES) or t.kind in ("list", "map")):
            return INT
        if name in _STRING_TESTS and t in (STRING, DYN) and len(types) == 1 and _strip(types[0]) in (STRING, DYN):
            return BOOL
        if not args and ((t in (TIMESTAMP, DYN) and name in _TIMESTAMP_GETTERS)
                         or (t == DURATION and name in _DURATION_GETTERS)):
            return INT
        if t == DYN:
            return DYN  # dyn opts out: whatever the value turns out to be decides at run time
        shown = ", ".join(str(x) for x in types)
        raise CelTypeError(f"no method {name}({shown}) on {_a(t)}")

    def _function(self, name: str, args) -> T:
        if name == "has":
            if len(args) != 1 or args[0][0] != "select":
                raise CelTypeError("has() takes one field selection, such as has(request.from)")
            self._select(*args[0][1:])
            return BOOL
        types = [self.type_of(a) for a in args]
        if name == "size" and len(types) == 1:
            t = _strip(types[0])
            if t == DYN or t in (STRING, BYTES) or t.kind in ("list", "map"):
                return INT
            raise CelTypeError(f"size() of a {types[0]}")
        if name in _CONVERSIONS and len(types) == 1:
            return _CONVERSIONS[name]
        raise CelTypeError(f"unknown function {name}() with {len(types)} argument(s)")

    def _macro(self, target, name: str, args) -> T:
        t = _strip(self.type_of(target))
        if t.kind == "list":
            elem = t.args[0]
        elif t.kind == "map":
            elem = t.args[0]
        elif t == DYN:
            elem = DYN
        else:
            raise CelTypeError(f"{name}() needs a list or a map, got {_a(t)}")
        self.scopes.append({args[0][1]: elem})
        try:
            body = [self.type_of(a) for a in args[1:]]
        finally:
            self.scopes.pop()
        predicates = body if name != "map" else body[:-1]
        for p in predicates:
            if _strip(p) not in (BOOL, DYN):
                raise CelTypeError(f"the condition of {name}() is {_a(p)}, not a boolean")
        if name == "map":
            return list_of(body[-1])
        if name == "filter":
            return list_of(elem)
        return BOOL
