"""The ``webhooks`` queue's job kind: ``webhook.deliver``.

Payload ``{"webhook": <name>, "event": <the JSON document>}``, lock key
``webhook|<name>|<event id>`` (one job per delivery; nothing coalesces). The
event is a fact, so the job carries it whole; the URL, token and timeout are
read from the configuration when the job runs (a token never sits in the
queue, and a changed URL applies to waiting jobs).

- delivered: done;
- the receiver answered otherwise (``failed``): retried with the queue's
  backoff, dead-lettered after ``max_retries + 1`` attempts (the envelope's
  ``max_attempts``, set when the job was queued);
- unreachable: the job waits without spending an attempt (:class:`DeferJob`)
  for a quarter of its age, between 0.5 s and 30 s, so a receiver that is down
  for an hour gets a try every 30 s and none of its events is lost or
  dead-lettered meanwhile (they show in ``/_ext/_jobs?queue=webhooks``);
- a webhook no longer configured: dead-lettered at once.
"""

from __future__ import annotations

import time

from ..queue.kinds import DeferJob, RetryableJobError, TerminalJobError, register
from .delivery import attempt
from .payload import encode

KIND_DELIVER = "webhook.deliver"


def run_deliver(job, ctx) -> None:
    payload = job.payload or {}
    name, doc = payload.get("webhook"), payload.get("event")
    if not isinstance(name, str) or not isinstance(doc, dict) or "id" not in doc or "kind" not in doc:
        raise TerminalJobError("malformed webhook job")
    hook = ctx.cfg.event_webhook.get(name)
    if hook is None:
        raise TerminalJobError(f"event webhook {name!r} is no longer configured")
    result = attempt(name, hook, doc["kind"], doc["id"], encode(doc))
    if result.ok:
        return
    if result.outcome == "unreachable":
        raise DeferJob(min(max((time.time() - job.created_at) / 4, 0.5), 30.0), result.error)
    raise RetryableJobError(result.error)


register(KIND_DELIVER, run_deliver)
