"""A parser for CEL expressions, enough to type-check them (:mod:`angos.auth.celtypes`).

Role: the ``cel`` binding compiles expressions but exposes no syntax tree, so
this module turns a rule's text into nested tuples:

- ``("lit", kind)`` with kind ``bool``, ``int``, ``uint``, ``double``,
  ``string``, ``bytes`` or ``null`` (values are not kept: only types matter);
- ``("ident", name)``, ``("select", operand, field)``,
  ``("index", operand, index)``;
- ``("call", target_or_None, name, [args])`` (functions, methods and macros
  such as ``has``, ``exists``, ``map``);
- ``("list", [items])``, ``("map", [(key, value)])``;
- ``("unary", op, operand)``, ``("binary", op, left, right)`` (``in``
  included), ``("cond", condition, then, otherwise)``.

Contract: :class:`Parser` ``(source).parse()`` returns the tree for an
expression the engine already compiled, following the CEL grammar's
precedence (``?:``, ``||``, ``&&``, relations, ``+ -``, ``* / %``, unary,
member access). Anything it does not handle (message construction, syntax
it does not know) raises :class:`Unsupported`, never a wrong tree, so the
caller can leave such a rule unchecked.
"""

from __future__ import annotations

import re


class Unsupported(Exception):
    """Syntax this parser does not handle."""


# ---------------------------------------------------------------- lexer

_TOKEN = re.compile(r"""
    (?P<ws>\s+|//[^\n]*)
  | (?P<str>(?:[rR][bB]?|[bB][rR]?)?(?:\"\"\"(?:\\.|[^\\])*?\"\"\"|'''(?:\\.|[^\\])*?'''|"(?:\\.|[^"\\\n])*"|'(?:\\.|[^'\\\n])*'))
  | (?P<num>0[xX][0-9a-fA-F]+[uU]?|\d+\.\d+(?:[eE][+-]?\d+)?|\d+[eE][+-]?\d+|\.\d+(?:[eE][+-]?\d+)?|\d+[uU]?)
  | (?P<id>[_a-zA-Z][_a-zA-Z0-9]*)
  | (?P<op>==|!=|<=|>=|&&|\|\||[<>!?:.,\[\]{}()+\-*/%])
""", re.X | re.S)


def _tokens(source: str) -> list[tuple[str, str]]:
    out, pos = [], 0
    while pos < len(source):
        m = _TOKEN.match(source, pos)
        if m is None:
            raise Unsupported(source[pos:pos + 10])
        pos = m.end()
        kind = m.lastgroup
        if kind == "ws":
            continue
        text = m.group()
        if kind == "str":
            out.append(("lit", "bytes" if text[:2].lower() in ("b'", 'b"', "br", "rb") else "string"))
        elif kind == "num":
            is_double = not text.lower().startswith("0x") and any(c in text for c in ".eE")
            out.append(("lit", "double" if is_double else "uint" if text[-1] in "uU" else "int"))
        elif kind == "id" and text in ("true", "false"):
            out.append(("lit", "bool"))
        elif kind == "id" and text == "null":
            out.append(("lit", "null"))
        elif kind == "id" and text == "in":
            out.append(("op", "in"))
        else:
            out.append((kind, text))
    out.append(("end", ""))
    return out


# ---------------------------------------------------------------- parser (recursive descent)

class Parser:
    def __init__(self, source: str):
        self.toks = _tokens(source)
        self.i = 0

    def peek(self, text: str | None = None) -> bool:
        kind, value = self.toks[self.i]
        return kind in ("op", "id") and value == text if text is not None else False

    def take(self, text: str) -> None:
        if not self.peek(text):
            raise Unsupported(f"expected {text!r}")
        self.i += 1

    def parse(self):
        node = self.expr()
        if self.toks[self.i][0] != "end":
            raise Unsupported("trailing input")
        return node

    def expr(self):
        cond = self.binary(0)
        if self.peek("?"):
            self.i += 1
            then = self.binary(0)
            self.take(":")
            return ("cond", cond, then, self.expr())
        return cond

    _LEVELS = (("||",), ("&&",), ("==", "!=", "<", "<=", ">", ">=", "in"), ("+", "-"), ("*", "/", "%"))

    def binary(self, level: int):
        if level == len(self._LEVELS):
            return self.unary()
        node = self.binary(level + 1)
        while self.toks[self.i][0] == "op" and self.toks[self.i][1] in self._LEVELS[level]:
            op = self.toks[self.i][1]
            self.i += 1
            node = ("binary", op, node, self.binary(level + 1))
        return node

    def unary(self):
        if self.peek("!") or self.peek("-"):
            op = self.toks[self.i][1]
            self.i += 1
            return ("unary", op, self.unary())
        return self.member()

    def member(self):
        node = self.primary()
        while True:
            if self.peek("."):
                self.i += 1
                kind, name = self.toks[self.i]
                if kind != "id":
                    raise Unsupported("field name expected")
                self.i += 1
                if self.peek("("):
                    node = ("call", node, name, self.args(")"))
                else:
                    node = ("select", node, name)
            elif self.peek("["):
                self.i += 1
                index = self.expr()
                self.take("]")
                node = ("index", node, index)
            else:
                return node

    def args(self, close: str) -> list:
        self.i += 1  # the opening bracket
        items = []
        while not self.peek(close):
            items.append(self.expr())
            if not self.peek(","):
                break
            self.i += 1
        self.take(close)
        return items

    def primary(self):
        kind, value = self.toks[self.i]
        if kind == "lit":
            self.i += 1
            return ("lit", value)
        if kind == "id":
            self.i += 1
            if self.peek("("):
                return ("call", None, value, self.args(")"))
            if self.peek("{"):
                raise Unsupported("message construction")
            return ("ident", value)
        if self.peek("("):
            self.i += 1
            node = self.expr()
            self.take(")")
            return node
        if self.peek("["):
            return ("list", self.args("]"))
        if self.peek("{"):
            self.i += 1
            entries = []
            while not self.peek("}"):
                key = self.expr()
                self.take(":")
                entries.append((key, self.expr()))
                if not self.peek(","):
                    break
                self.i += 1
            self.take("}")
            return ("map", entries)
        raise Unsupported(f"unexpected {value!r}")
