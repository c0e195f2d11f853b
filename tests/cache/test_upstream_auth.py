"""Upstream credentials: Distribution with htpasswd (Basic), Distribution with the registry token
flow (the replication tests' token server), and another Angos with a deny-by-default policy."""

from __future__ import annotations


import requests

from ..auth.conftest import argon_hash
from ..replication.token_server import TokenServer
from .conftest import MANIFEST_ACCEPT, cache_config, head_digest, pull, push


def test_basic_auth_distribution_upstream(angos_factory, docker_registry_factory, image, tmp_path):
    dist = docker_registry_factory(users={"mirror": "s3cret"})
    push(image, dist.host, "library/app:v1", "mirror:s3cret")
    cache = angos_factory(config_text=cache_config({"url": dist.url, "username": "mirror", "password": "s3cret"}))
    pull(cache.host, "hub/library/app:v1", tmp_path / "out")
    assert head_digest(cache.v2("hub/library/app/manifests/v1")) == image.digest

    wrong = angos_factory(config_text=cache_config({"url": dist.url, "username": "mirror", "password": "nope"}))
    r = requests.get(wrong.v2("hub/library/app/manifests/v1"), headers={"Accept": MANIFEST_ACCEPT})
    assert r.status_code == 502 and "answered 401" in r.json()["errors"][0]["message"]


def test_token_flow_distribution_upstream_caches_tokens_per_scope(
        angos_factory, docker_registry_factory, image, tmp_path):
    tokens = TokenServer("test-registry", "test-issuer", {"mirror": "s3cret"}).start()
    try:
        dist = docker_registry_factory(tokens=tokens)
        assert requests.get(f"{dist.url}/v2/").headers["WWW-Authenticate"].startswith("Bearer ")
        push(image, dist.host, "library/app:v1", "mirror:s3cret")
        issued = tokens.issued
        cache = angos_factory(config_text=cache_config(
            {"url": dist.url, "username": "mirror", "password": "s3cret"}, workers=1))
        pull(cache.host, "hub/library/app:v1", tmp_path / "out")
        assert head_digest(cache.v2("hub/library/app/manifests/v1")) == image.digest
        # One pull scope for the namespace: a token per process that asked (the web worker and
        # the drain's background fills), not one per request.
        assert 1 <= tokens.issued - issued <= 2
    finally:
        tokens.stop()


def test_angos_upstream_with_basic_credentials(angos_factory, image, tmp_path):
    upstream = angos_factory(config_text=(
        '[server]\nbind_address = "127.0.0.1"\nport = @PORT@\n\n[blob_store.fs]\nroot_dir = "@DATA@"\n\n'
        '[global.access_policy]\ndefault = "deny"\nrules = ["identity.username == \'mirror\'"]\n\n'
        f'[auth.identity.mirror]\nusername = "mirror"\npassword = "{argon_hash("s3cret")}"\n'))
    push(image, upstream.host, "team/app:v1", "mirror:s3cret")
    assert requests.get(upstream.v2("team/app/tags/list")).status_code == 401
    cache = angos_factory(config_text=cache_config(
        {"url": upstream.url + "/team", "username": "mirror", "password": "s3cret"}))
    # The URL path maps hub/<x> to team/<x> on the upstream.
    pull(cache.host, "hub/app:v1", tmp_path / "out")
    assert head_digest(cache.v2("hub/app/manifests/v1")) == image.digest


def test_https_upstream_with_private_ca_and_client_certificate(angos_factory, tmp_path):
    import hashlib

    from ..auth.conftest import make_pki
    from ..replication.test_tls import _reachable
    from ..replication.conftest import wait_for

    pki = make_pki(tmp_path / "pki")
    cert, key = pki.client("mirror", "Caches")
    upstream = angos_factory(start=False, extra=f"""
[server.tls]
server_certificate_bundle = "{pki.server_cert}"
server_private_key = "{pki.server_key}"
client_ca_bundle = "{pki.ca}"
client_auth = "required"
""")
    url = f"https://127.0.0.1:{upstream.port}"
    upstream.start(wait=False)
    assert wait_for(lambda: _reachable(url, pki.ca, (cert, key)), timeout=30)
    tls = {"verify": str(pki.ca), "cert": (cert, key)}
    blob = b'{"architecture":"amd64","os":"linux"}'
    bd = "sha256:" + hashlib.sha256(blob).hexdigest()
    assert requests.post(f"{url}/v2/team/app/blobs/uploads/?digest={bd}", data=blob, **tls).status_code == 201
    body = ('{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":'
            f'"application/vnd.oci.image.config.v1+json","digest":"{bd}","size":{len(blob)}}},"layers":[]}}').encode()
    md = "sha256:" + hashlib.sha256(body).hexdigest()
    r = requests.put(f"{url}/v2/team/app/manifests/v1", data=body, **tls,
                     headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"})
    assert r.status_code == 201, r.text

    cache = angos_factory(config_text=cache_config({
        "url": url + "/team", "server_ca_bundle": str(pki.ca), "client_certificate": cert, "client_private_key": key}))
    assert head_digest(cache.v2("hub/app/manifests/v1")) == md
    r = requests.get(cache.v2(f"hub/app/blobs/{bd}"))
    assert r.status_code == 200 and r.content == blob
    # Without the client certificate the upstream refuses the handshake: nothing to serve.
    bare = angos_factory(config_text=cache_config({"url": url + "/team", "server_ca_bundle": str(pki.ca),
                                                   "connect_timeout_secs": 5}))
    r = requests.get(bare.v2("hub/app/manifests/v1"), headers={"Accept": MANIFEST_ACCEPT})
    assert r.status_code == 503 and url in r.json()["errors"][0]["message"]
