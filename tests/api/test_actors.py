"""The actor event webhooks report for each kind of caller (angos.api.actors), in a request context."""

from __future__ import annotations

import pytest
from flask import Flask, g

from angos.api.actors import current_actor
from angos.auth.identity import Identity, Oidc
from angos.registry.events import Actor


@pytest.mark.parametrize("identity, actor", [
    (Identity(id="ci", username="ci-bot", client_ip="10.0.0.7"), Actor("user", "ci", "ci-bot", "10.0.0.7")),
    (Identity(client_ip="10.0.0.8"), Actor("anonymous", client_ip="10.0.0.8")),
    (Identity(client_ip="10.0.0.9", common_names=("builder",)), Actor("user", None, "builder", "10.0.0.9")),
    (Identity(client_ip="10.0.0.1", oidc=Oidc.of("github-actions", {"sub": "repo:org/app:ref:refs/heads/main"}, 0)),
     Actor("user", None, "repo:org/app:ref:refs/heads/main", "10.0.0.1", provider="github-actions")),
    (None, Actor("anonymous", client_ip="127.0.0.1")),
])
def test_each_kind_of_caller_becomes_its_actor(identity, actor):
    app = Flask("actors")
    with app.test_request_context("/", environ_base={"REMOTE_ADDR": "127.0.0.1"}):
        if identity is not None:
            g.identity = identity
        assert current_actor() == actor
