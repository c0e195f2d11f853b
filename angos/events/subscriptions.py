"""Which webhooks hear of an activity, for one configuration.

A namespace's webhooks are its repository's ``event_webhooks`` when that is
set (even to ``[]``), else ``global.event_webhooks``; of those, the ones whose
``events`` list the activity's kind and whose ``repository_filter`` (regexes
searched in the namespace) matches, or is empty. :attr:`Subscriptions.kinds`
is every kind some referenced webhook lists: what the registry asks about
before it builds an activity, so it must stay a set lookup.
"""

from __future__ import annotations

import re
from functools import lru_cache


class Subscriptions:
    def __init__(self, cfg):
        self.cfg = cfg
        used = set(cfg.global_.event_webhooks)
        for repo in cfg.repository.values():
            used.update(repo.event_webhooks or ())
        self.kinds = frozenset(kind for name in used for kind in cfg.event_webhook[name].events)
        self._names = lru_cache(maxsize=4096)(self._names_for)

    def _names_for(self, namespace: str) -> tuple[str, ...]:
        _, repo = self.cfg.repository_for(namespace)
        if repo is not None and repo.event_webhooks is not None:
            return repo.event_webhooks
        return self.cfg.global_.event_webhooks

    def hooks_for(self, kind: str, namespace: str) -> list[tuple[str, object]]:
        """``(name, EventWebhook)`` of every webhook reporting ``kind`` in ``namespace``."""
        if kind not in self.kinds:
            return []
        out = []
        for name in self._names(namespace):
            hook = self.cfg.event_webhook[name]
            if kind in hook.events and (not hook.repository_filter
                                        or any(re.search(p, namespace) for p in hook.repository_filter)):
                out.append((name, hook))
        return out

    def repository(self, namespace: str) -> str | None:
        return self.cfg.repository_for(namespace)[0]
