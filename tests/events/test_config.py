"""``[event_webhook.<name>]`` and ``event_webhooks`` validation (one-line errors naming the key), and
which webhooks hear of what (angos.events.subscriptions) — no servers."""

from __future__ import annotations

import pytest

from angos.config import ConfigError, load_config_text
from angos.events.payload import signature
from angos.events.subscriptions import Subscriptions
from angos.registry.events import ACTIVITY_KINDS, Listeners

BASE = """
[server]
bind_address = "127.0.0.1"
[blob_store.fs]
root_dir = "/tmp/angos-events-config"
"""
HOOK = """
[event_webhook.audit]
url = "https://hooks.example.com/registry"
policy = "required"
events = ["manifest.push"]
"""


def _load(extra: str):
    return load_config_text(BASE + extra)


@pytest.mark.parametrize("extra, where, says", [
    (HOOK.replace('"https://hooks.example.com/registry"', '"ftp://x"'), "event_webhook.audit.url", "http://"),
    (HOOK.replace('"required"', '"sync"'), "event_webhook.audit.policy", "must be one of"),
    (HOOK.replace('policy = "required"\n', ''), "event_webhook.audit.policy", "required key is missing"),
    (HOOK.replace('["manifest.push"]', '[]'), "event_webhook.audit.events", "at least one"),
    (HOOK.replace('["manifest.push"]', '["image.push"]'), "event_webhook.audit.events", "unknown event 'image.push'"),
    (HOOK + 'token = ""\n', "event_webhook.audit.token", "non-empty"),
    (HOOK + 'token = "two words"\n', "event_webhook.audit.token", "without spaces"),
    (HOOK + 'timeout = "0s"\n', "event_webhook.audit.timeout", "more than 0s"),
    (HOOK + 'timeout = "2m"\n', "event_webhook.audit.timeout", "at most 60s"),
    (HOOK + 'timeout = "soon"\n', "event_webhook.audit.timeout", "expected a duration"),
    (HOOK + 'max_retries = 17\n', "event_webhook.audit.max_retries", "0-16"),
    (HOOK + 'max_retries = -1\n', "event_webhook.audit.max_retries", "0-16"),
    (HOOK + 'repository_filter = ["("]\n', "event_webhook.audit.repository_filter", "invalid regex"),
    (HOOK + 'retries = 3\n', "event_webhook.audit.retries", "unknown key"),
    (HOOK.replace("event_webhook.audit", 'event_webhook."a b"'), 'event_webhook."a b"', "webhook name"),
    ('[global]\nevent_webhooks = ["audit"]\n', "global.event_webhooks[0]", "no [event_webhook.audit] table"),
    (HOOK + '[repository."team"]\nevent_webhooks = ["audit", "nope"]\n', 'repository.team.event_webhooks[1]',
     "no [event_webhook.nope] table (defined: audit)"),
    (HOOK + 'max_concurrent_webhook_jobs = 0\n', "event_webhook.audit.max_concurrent_webhook_jobs", "unknown key"),
    ('[global]\nmax_concurrent_webhook_jobs = 0\n', "global.max_concurrent_webhook_jobs", "greater than zero"),
])
def test_a_bad_webhook_setting_fails_with_one_line_naming_the_key(extra, where, says):
    with pytest.raises(ConfigError) as err:
        _load(extra)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(where + ":"), message
    assert says in message, message


def test_a_token_never_appears_in_a_config_error():
    with pytest.raises(ConfigError) as err:
        _load(HOOK + 'token = "s3cr3t value"\n')
    assert "s3cr3t" not in str(err.value)


def test_defaults_and_a_duration_timeout():
    cfg = _load(HOOK + 'timeout = "1500ms"\n')
    hook = cfg.event_webhook["audit"]
    assert (hook.timeout, hook.max_retries, hook.token, hook.repository_filter) == (1.5, 0, None, ())
    assert cfg.global_.event_webhooks == () and cfg.global_.max_concurrent_webhook_jobs == 4


def test_a_repository_list_replaces_the_global_one_and_filters_search_the_namespace():
    cfg = _load(HOOK + """
[event_webhook.pulls]
url = "http://127.0.0.1:9/x"
policy = "async"
events = ["manifest.pull", "manifest.push"]
repository_filter = ["^team/prod-"]

[global]
event_webhooks = ["audit", "pulls"]

[repository."quiet"]
event_webhooks = []

[repository."own"]
event_webhooks = ["pulls"]
""")
    subs = Subscriptions(cfg)
    assert subs.kinds == {"manifest.push", "manifest.pull"}
    names = lambda kind, ns: [n for n, _ in subs.hooks_for(kind, ns)]  # noqa: E731
    assert names("manifest.push", "team/prod-api") == ["audit", "pulls"]
    assert names("manifest.push", "team/dev-api") == ["audit"]
    assert names("manifest.pull", "team/dev-api") == []
    assert names("manifest.push", "quiet/app") == []
    assert names("manifest.push", "own/app") == []          # its one webhook's filter does not match
    assert names("blob.push", "team/prod-api") == []
    assert subs.repository("own/app") == "own" and subs.repository("team/x") is None


def test_nothing_is_built_for_a_kind_no_webhook_wants():
    listeners = Listeners()
    assert not any(listeners.wants(k) for k in ACTIVITY_KINDS)
    assert listeners.activity("blob.pull", "ns", None) is None


def test_the_signature_matches_the_documented_test_vector():
    # HMAC-SHA256("test-secret", "hello world"), as the product's reference documents it.
    assert signature("test-secret", b"hello world") == \
        "sha256=046e2496e13e0bfd8dbef84244dd188311a48086646355161bc4ad0769a49cf4"
