"""The watcher on ``registry.listeners`` that hands activities to webhooks.

- :meth:`EventWebhooks.wants` answers from a set, for the pull paths.
- :meth:`EventWebhooks.vet` runs before the operation: each ``required``
  webhook for the activity is delivered to now; if one is not, the operation
  is refused (``403 DENIED`` when the receiver answered otherwise than 2xx,
  ``503 UNAVAILABLE`` when it could not be reached) and nothing is done.
- Called after the commit (as a listener), it delivers to ``optional``
  webhooks now, logging failures, and queues one ``webhook.deliver`` job per
  ``async`` webhook (``max_retries + 1`` attempts). Neither ever fails the
  operation, which has happened already.

A receiver told of an operation by a ``required`` webhook can still see it
fail afterwards (a conflicting write won, storage failed): ``required`` means
"nothing is done that you were not told about", not "everything you were told
about was done".
"""

from __future__ import annotations

import logging
from typing import Callable

from ..oci.errors import Denied, Unavailable
from ..registry.events import Activity
from .delivery import deliver, zero_series
from .payload import encode, event_document
from .subscriptions import Subscriptions

log = logging.getLogger("angos.events")


class EventWebhooks:
    def __init__(self, config: Callable, enqueue: Callable[[str, dict, int], bool]):
        """``config()`` is the current Config; ``enqueue(lock_key, payload, max_attempts)`` queues one
        ``webhook.deliver`` job and never raises."""
        self.config = config
        self.enqueue = enqueue
        self._subs: Subscriptions | None = None
        self.subscriptions()  # now, so every webhook's delivery counters exist (at 0) from start-up

    def subscriptions(self) -> Subscriptions:
        cfg = self.config()
        subs = self._subs
        if subs is None or subs.cfg is not cfg:
            subs = self._subs = Subscriptions(cfg)
            zero_series(cfg.event_webhook)
        return subs

    def wants(self, kind: str) -> bool:
        return kind in self.subscriptions().kinds

    def _document(self, subs: Subscriptions, act: Activity) -> tuple[dict, bytes]:
        doc = event_document(act, subs.repository(act.namespace))
        return doc, encode(doc)

    def vet(self, act: Activity) -> None:
        subs = self.subscriptions()
        required = [(n, h) for n, h in subs.hooks_for(act.kind, act.namespace) if h.policy == "required"]
        if not required:
            return
        _, body = self._document(subs, act)
        for name, hook in required:
            result = deliver(name, hook, act.kind, act.id, body)
            if not result.ok:
                log.warning("%s on %s refused: required %s", act.kind, act.namespace, result.error)
                error = Denied if result.outcome == "failed" else Unavailable
                raise error(f"{act.kind} refused: required {result.error}")

    def __call__(self, event) -> None:
        if not isinstance(event, Activity):
            return
        subs = self.subscriptions()
        hooks = [(n, h) for n, h in subs.hooks_for(event.kind, event.namespace) if h.policy != "required"]
        if not hooks:
            return
        doc, body = self._document(subs, event)
        for name, hook in hooks:
            if hook.policy == "optional":
                result = deliver(name, hook, event.kind, event.id, body)
                if not result.ok:
                    log.warning("%s on %s (event %s) not delivered: %s", event.kind, event.namespace, event.id,
                                result.error)
            else:
                self.enqueue(f"webhook|{name}|{event.id}", {"webhook": name, "event": doc}, hook.max_retries + 1)
