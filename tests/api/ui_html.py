"""A small DOM for asserting on the UI's pages (standard library only): ``parse(text)`` returns
the root :class:`Node`; ``select`` finds elements by tag, classes and attributes, like a tiny
CSS selector (``node.select("tr", data_tag="v1")``, ``node.select("span", cls="badge referrer")``).

Text is unescaped by the parser, so ``node.text()`` is what a reader sees; the raw page text is
what escaping tests look at."""

from __future__ import annotations

from html.parser import HTMLParser

VOID = frozenset({"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "wbr"})


class Node:
    def __init__(self, tag: str, attrs: dict, parent: "Node | None" = None):
        self.tag, self.attrs, self.parent, self.children = tag, attrs, parent, []

    def text(self) -> str:
        # Elements count as word breaks, except <wbr> (a line-break opportunity, no text).
        return " ".join("".join(c if isinstance(c, str) else "" if c.tag == "wbr" else " " + c.text() + " "
                                for c in self.children).split())

    def classes(self) -> set[str]:
        return set((self.attrs.get("class") or "").split())

    def elements(self):
        for c in self.children:
            if isinstance(c, Node):
                yield c
                yield from c.elements()

    def select(self, tag: str | None = None, cls: str | None = None, **attrs) -> list["Node"]:
        want = set(cls.split()) if cls else set()
        wanted = {k.replace("_", "-"): v for k, v in attrs.items()}
        out = []
        for el in self.elements():
            if tag and el.tag != tag or not want <= el.classes():
                continue
            if all((el.attrs.get(k) is not None) if v is True else el.attrs.get(k) == v for k, v in wanted.items()):
                out.append(el)
        return out

    def one(self, tag: str | None = None, cls: str | None = None, **attrs) -> "Node":
        found = self.select(tag, cls, **attrs)
        assert len(found) == 1, f"expected one {tag} {cls} {attrs}, found {len(found)}"
        return found[0]

    def __repr__(self) -> str:
        return f"<{self.tag} {self.attrs}>"


class _Builder(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.root = self.cur = Node("#root", {})

    def handle_starttag(self, tag, attrs):
        node = Node(tag, {k: (v if v is not None else "") for k, v in attrs}, self.cur)
        self.cur.children.append(node)
        if tag not in VOID:
            self.cur = node

    def handle_startendtag(self, tag, attrs):
        self.cur.children.append(Node(tag, {k: (v if v is not None else "") for k, v in attrs}, self.cur))

    def handle_endtag(self, tag):
        node = self.cur
        while node is not None and node.tag != tag:
            node = node.parent
        if node is not None and node.parent is not None:
            self.cur = node.parent

    def handle_data(self, data):
        self.cur.children.append(data)


def parse(text: str) -> Node:
    b = _Builder()
    b.feed(text)
    b.close()
    return b.root
