"""The namespace catalog, derived from stored content (no separate index).

A path under ``repositories/`` is a namespace exactly when it has a
``_manifests`` child; names starting with ``_`` are never descended into.
"""

from __future__ import annotations

from . import paths


class Catalog:
    def __init__(self, meta):
        self.meta = meta

    def namespaces(self) -> list[str]:
        out: list[str] = []
        self._walk(paths.REPOS, "", out)
        return sorted(out)

    def _walk(self, key: str, ns: str, out: list[str]) -> None:
        children = self.meta.children(key)
        if ns and "_manifests" in children and self.meta.children(f"{key}/_manifests"):
            out.append(ns)
        for child in children:
            if child.startswith("_"):
                continue
            self._walk(f"{key}/{child}", f"{ns}/{child}" if ns else child, out)
