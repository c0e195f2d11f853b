"""Event webhooks: registry activities reported to HTTP receivers (README "Event webhooks").

The registry core emits :class:`~angos.registry.events.Activity` objects and
knows nothing of webhooks; :class:`.listener.EventWebhooks` is the watcher
``create_app`` (and ``scrub --retention``) adds to ``registry.listeners`` when
``[event_webhook.<name>]`` tables exist:

- :mod:`.subscriptions` decides which webhooks hear of an activity
  (``event_webhooks`` globally or per repository, ``events``,
  ``repository_filter``);
- :mod:`.payload` is the JSON body and its HMAC-SHA256 signature;
- :mod:`.delivery` is one HTTP POST (and the synchronous retry loop), with
  the ``angos_event_webhook_*`` metrics;
- :mod:`.tasks` runs ``async`` deliveries as ``webhook.deliver`` jobs on the
  ``webhooks`` queue.
"""


def wire(registry, config, queues) -> None:
    """Report ``registry``'s activities to the webhooks of ``config()`` (the current Config), queueing
    ``async`` deliveries on ``queues`` (a :class:`angos.queue.JobQueues`). Nothing is wired when the
    configuration defines no webhook, so the pull paths stay free of it."""
    if not config().event_webhook:
        return
    from .listener import EventWebhooks
    from .tasks import KIND_DELIVER

    def enqueue(lock_key: str, payload: dict, max_attempts: int) -> bool:
        return queues.enqueue("webhooks", KIND_DELIVER, lock_key, payload, max_attempts=max_attempts)

    registry.listeners.watch(EventWebhooks(config, enqueue))
