"""One-way replication into CNCF Distribution (docker-registry): basic auth
(htpasswd) and the token flow; referrers via the fallback tag; tag deletes it
refuses complete as ``unsupported`` without dead-lettering."""

from __future__ import annotations


import requests

from ..conftest import skopeo
from ..images import single_platform_image
from ..conftest import wait_for
from .conftest import push_counts, source_config
from .test_active_active import _push_artifact
from .token_server import TokenServer

def _source(url: str) -> str:
    return source_config({"name": "distribution", "url": url, "username": "replicator", "password": "s3cret"})


def _dist_digest(dist, ns, ref, auth=None, token: str | None = None):
    headers = {"Accept": "application/vnd.oci.image.manifest.v1+json,application/vnd.oci.image.index.v1+json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    r = requests.head(f"{dist.url}/v2/{ns}/manifests/{ref}", auth=auth, headers=headers)
    return r.headers.get("Docker-Content-Digest") if r.status_code == 200 else None


def _failed_jobs(server) -> list:
    return requests.get(server.url + "/_ext/_jobs/failed?queue=replication").json()["failed"]


def test_basic_auth_downstream_gets_images_referrers_and_unsupported_tag_delete(
        angos_factory, docker_registry_factory, tmp_path):
    dist = docker_registry_factory(users={"replicator": "s3cret"})
    assert requests.get(f"{dist.url}/v2/").status_code == 401
    source = angos_factory(config_text=_source(dist.url))
    img = single_platform_image(tmp_path / "img", "v1")
    skopeo("copy", "--dest-tls-verify=false", img.oci_ref, f"docker://{source.host}/nginx/app:v1")
    creds = ("replicator", "s3cret")
    assert wait_for(lambda: _dist_digest(dist, "nginx/app", "v1", creds) == img.digest, timeout=10)

    size = int(requests.head(source.v2(f"nginx/app/manifests/{img.digest}")).headers["Content-Length"])
    art = _push_artifact(source, "nginx/app", img.digest, size)
    fallback = "sha256-" + img.digest.split(":", 1)[1]

    def fallback_lists_artifact():
        r = requests.get(f"{dist.url}/v2/nginx/app/manifests/{fallback}", auth=creds,
                         headers={"Accept": "application/vnd.oci.image.index.v1+json"})
        return r.status_code == 200 and [m["digest"] for m in r.json()["manifests"]] == [art]

    assert wait_for(fallback_lists_artifact, timeout=10)

    assert requests.delete(source.v2("nginx/app/manifests/v1")).status_code == 202
    assert wait_for(lambda: push_counts(source).get(("distribution", "unsupported"), 0) >= 1, timeout=10)
    assert _failed_jobs(source) == []
    assert push_counts(source).get(("distribution", "failed"), 0) == 0


def test_token_auth_downstream(angos_factory, docker_registry_factory, tmp_path):
    tokens = TokenServer("test-registry", "test-issuer", {"replicator": "s3cret"}).start()
    try:
        dist = docker_registry_factory(tokens=tokens)
        challenge = requests.get(f"{dist.url}/v2/").headers.get("WWW-Authenticate", "")
        assert challenge.startswith("Bearer ")
        source = angos_factory(config_text=_source(dist.url))
        digests = []
        for tag in ("v1", "v2", "v3"):
            img = single_platform_image(tmp_path / tag, tag)
            skopeo("copy", "--dest-tls-verify=false", img.oci_ref, f"docker://{source.host}/nginx/app:{tag}")
            digests.append((tag, img.digest))
        reader = tokens.token("reader", ["repository:nginx/app:pull"])
        for tag, digest in digests:
            assert wait_for(lambda t=tag, d=digest: _dist_digest(dist, "nginx/app", t, token=reader) == d,
                            timeout=10)
        # Tokens are cached per scope: three images (dozens of requests) need one token
        # per distinct scope (pull; pull,push; a mount's source scope), not one per request.
        assert 1 <= tokens.issued <= 4
        assert push_counts(source).get(("distribution", "failed"), 0) == 0
    finally:
        tokens.stop()
