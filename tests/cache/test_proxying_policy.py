"""``?ns=`` registry proxying, ``request.cache_fill`` in the access policy, referrers answered
from the cache, and another Angos as the upstream."""

from __future__ import annotations

import requests

from ..replication.test_active_active import _push_artifact
from .conftest import MANIFEST_ACCEPT, cache_config, head_digest, pull, push


def test_ns_parameter_serves_the_repository_that_declares_the_registry_host(
        angos_factory, upstream, image, tmp_path):
    push(image, upstream.host, "library/app:v1")
    cache = angos_factory(config_text=cache_config({"url": upstream.url}, repo_extra='namespace = "docker.io"\n'))

    r = requests.get(cache.v2("library/app/manifests/v1?ns=docker.io"), headers={"Accept": MANIFEST_ACCEPT})
    assert r.status_code == 200 and r.headers["OCI-Namespace"] == "docker.io"
    assert r.headers["Docker-Content-Digest"] == image.digest
    blob = image.blobs[-1]
    r = requests.get(cache.v2(f"library/app/blobs/{blob}?ns=docker.io"))
    assert r.status_code == 200 and r.headers["OCI-Namespace"] == "docker.io"
    # It landed in the repository's namespace.
    assert head_digest(cache.v2("hub/library/app/manifests/v1")) == image.digest
    # A client that already uses the repository path (a mirror configured with it) is not double-prefixed.
    assert head_digest(cache.v2("hub/library/app/manifests/v1?ns=docker.io")) == image.digest

    # An ns no repository declares is ignored: the name is served as it is (here: nothing).
    r = requests.get(cache.v2("library/app/manifests/v1?ns=quay.io"), headers={"Accept": MANIFEST_ACCEPT})
    assert r.status_code == 404 and "OCI-Namespace" not in r.headers
    # ns never redirects a write: this push lands in library/app, an ordinary namespace.
    r = requests.post(cache.v2("library/app/blobs/uploads/?ns=docker.io"))
    assert r.status_code == 202 and r.headers["Location"].startswith("/v2/library/app/")


def test_policy_can_allow_cached_reads_and_forbid_fills(angos_factory, upstream, image, tmp_path):
    push(image, upstream.host, "library/app:v1")
    push(image, upstream.host, "library/app:v2")
    rules = '["has(request.cache_fill) && request.cache_fill && identity.username != \'warmer\'"]'
    from ..auth.conftest import argon_hash

    cache = angos_factory(config_text=cache_config(
        {"url": upstream.url}, extra=f'[global.access_policy]\ndefault = "allow"\nrules = {rules}\n\n'
        f'[auth.identity.warmer]\nusername = "warmer"\npassword = "{argon_hash("w")}"\n').replace(
            '[global.access_policy]\ndefault = "allow"\n\n', "", 1))
    # Anonymous clients may not cause fills...
    r = requests.get(cache.v2("hub/library/app/manifests/v1"), headers={"Accept": MANIFEST_ACCEPT})
    assert r.status_code == 401
    # ...the warmer may (skopeo sends credentials only when /v2/ asks for them, so warm by hand),
    # and afterwards everyone reads what is cached.
    warmer = ("warmer", "w")
    r = requests.get(cache.v2("hub/library/app/manifests/v1"), headers={"Accept": MANIFEST_ACCEPT}, auth=warmer)
    assert r.status_code == 200
    for blob in image.blobs:
        assert requests.get(cache.v2(f"hub/library/app/blobs/{blob}"), auth=warmer).status_code == 200
    pull(cache.host, "hub/library/app:v1", tmp_path / "anon")
    assert requests.get(cache.v2(f"hub/library/app/blobs/{image.blobs[0]}")).status_code == 200
    r = requests.get(cache.v2("hub/library/app/manifests/v2"), headers={"Accept": MANIFEST_ACCEPT})
    assert r.status_code == 401


def test_referrers_are_answered_from_what_the_cache_holds(angos_factory, image, tmp_path):
    upstream = angos_factory()
    push(image, upstream.host, "team/app:v1")
    size = int(requests.head(upstream.v2(f"team/app/manifests/{image.digest}"),
                             headers={"Accept": MANIFEST_ACCEPT}).headers["Content-Length"])
    artifact = _push_artifact(upstream, "team/app", image.digest, size)
    cache = angos_factory(config_text=cache_config({"url": upstream.url + "/team"}))

    pull(cache.host, "hub/app:v1", tmp_path / "out")
    listed = lambda: [m["digest"] for m in requests.get(  # noqa: E731
        cache.v2(f"hub/app/referrers/{image.digest}")).json()["manifests"]]
    assert listed() == []  # not fetched yet: the cache answers from what it holds
    r = requests.get(cache.v2(f"hub/app/manifests/{artifact}"), headers={"Accept": MANIFEST_ACCEPT})
    assert r.status_code == 200
    assert listed() == [artifact]
