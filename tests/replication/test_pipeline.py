"""The sync pipeline against real downstreams: CNCF Distribution and Angos."""

from __future__ import annotations

import requests

from angos.config import build_config
from angos.registry import build_registry
from angos.replication.client import DownstreamClient
from angos.replication.mapping import remote_namespace
from angos.replication.pipeline import CONVERGED, NOOP, PUSHED, UNSUPPORTED, Pipeline

from . import content


def _local(tmp_path, downstream_url: str, repo: str = "nginx"):
    cfg = build_config({
        "server": {"bind_address": "127.0.0.1", "port": 1, "workers": 1},
        "blob_store": {"fs": {"root_dir": str(tmp_path / "src")}},
        "repository": {repo: {"downstream": [{"name": "peer", "url": downstream_url}]}},
    })
    return cfg, build_registry(cfg)


def _pipeline(cfg, reg, ns: str, repo: str = "nginx", on_referrer=None) -> Pipeline:
    ds = cfg.repository[repo].downstream[0]
    target = remote_namespace(repo, ns, ds.url)
    return Pipeline(reg, DownstreamClient(target.base_url, ds), ds, repo, ns, target, on_referrer)


def _remote_digest(url: str, ns: str, ref: str) -> str | None:
    r = requests.head(f"{url}/v2/{ns}/manifests/{ref}", headers={"Accept": "application/vnd.oci.image.manifest.v1+json,"
                                                                          "application/vnd.oci.image.index.v1+json"})
    return r.headers.get("Docker-Content-Digest") if r.status_code == 200 else None


def test_push_image_then_rerun_is_converged(tmp_path, docker_registry_factory):
    dist = docker_registry_factory()
    cfg, reg = _local(tmp_path, dist.url)
    digest, _ = content.image(reg, "nginx/app", "v1", layers=3)
    p = _pipeline(cfg, reg, "nginx/app")
    assert p.sync("v1").result == PUSHED
    assert _remote_digest(dist.url, "nginx/app", "v1") == digest
    assert p.sync("v1").result == CONVERGED


def test_push_index_sends_children_first(tmp_path, angos_factory):
    down = angos_factory()
    cfg, reg = _local(tmp_path, down.url)
    children = [content.image(reg, "nginx/multi", None) for _ in range(2)]
    digest, _ = content.index(reg, "nginx/multi", "latest", children)
    assert _pipeline(cfg, reg, "nginx/multi").sync("latest").result == PUSHED
    assert _remote_digest(down.url, "nginx/multi", "latest") == digest
    for d, _ in children:
        assert _remote_digest(down.url, "nginx/multi", d) == d


def test_url_path_maps_repository_prefix(tmp_path, angos_factory):
    down = angos_factory()
    cfg, reg = _local(tmp_path, down.url + "/team-a", repo="team")
    digest, _ = content.image(reg, "team/app", "v1")
    assert _pipeline(cfg, reg, "team/app", repo="team").sync("v1").result == PUSHED
    assert _remote_digest(down.url, "team-a/app", "v1") == digest


def test_blob_is_mounted_from_sibling_namespace_not_resent(tmp_path, angos_factory):
    down = angos_factory()
    cfg, reg = _local(tmp_path, down.url)
    seed = b"shared-seed"
    content.image(reg, "nginx/one", "v1", seed=seed)
    content.image(reg, "nginx/two", "v1", seed=seed)
    assert _pipeline(cfg, reg, "nginx/one").sync("v1").result == PUSHED
    before = _upload_bytes(down)
    assert _pipeline(cfg, reg, "nginx/two").sync("v1").result == PUSHED
    # Same seed -> same layers and config: the second push mounts, it uploads no blob bytes.
    assert _upload_bytes(down) == before


def _upload_bytes(server) -> float:
    text = requests.get(server.url + "/metrics").text
    total = 0.0
    for line in text.splitlines():
        if line.startswith("http_requests_total{") and 'route="complete-upload"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_missing_local_tag_is_a_noop(tmp_path, angos_factory):
    down = angos_factory()
    cfg, reg = _local(tmp_path, down.url)
    assert _pipeline(cfg, reg, "nginx/app").sync("gone").result == NOOP


def test_referrer_lands_in_fallback_tag_on_distribution(tmp_path, docker_registry_factory):
    dist = docker_registry_factory()
    cfg, reg = _local(tmp_path, dist.url)
    subject_digest, subject_body = content.image(reg, "nginx/app", "v1")
    subject = {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": subject_digest,
               "size": len(subject_body)}
    ref_digest, _ = content.image(reg, "nginx/app", None, layers=1, subject=subject,
                                  artifact_type="application/vnd.example.sig")
    asked = []
    p = _pipeline(cfg, reg, "nginx/app", on_referrer=asked.append)
    assert p.sync("v1").result == PUSHED
    assert p.sync(ref_digest).result == PUSHED
    assert asked == [subject_digest]  # Distribution has no referrers API: the fallback tag must follow
    assert p.rebuild_fallback(subject_digest).result == PUSHED
    assert p.rebuild_fallback(subject_digest).result == CONVERGED
    fallback = "sha256-" + subject_digest.split(":", 1)[1]
    r = requests.get(f"{dist.url}/v2/nginx/app/manifests/{fallback}",
                     headers={"Accept": "application/vnd.oci.image.index.v1+json"})
    assert r.status_code == 200
    entries = r.json()["manifests"]
    assert [e["digest"] for e in entries] == [ref_digest]
    assert entries[0]["artifactType"] == "application/vnd.example.sig"


def test_tag_delete_refused_by_distribution_is_unsupported(tmp_path, docker_registry_factory):
    dist = docker_registry_factory()
    cfg, reg = _local(tmp_path, dist.url)
    content.image(reg, "nginx/app", "v1")
    p = _pipeline(cfg, reg, "nginx/app")
    assert p.sync("v1").result == PUSHED
    reg.manifests.delete("nginx/app", "v1")
    assert p.sync("v1").result == UNSUPPORTED


def test_delete_on_angos_then_again_is_converged(tmp_path, angos_factory):
    down = angos_factory()
    cfg, reg = _local(tmp_path, down.url)
    content.image(reg, "nginx/app", "v1")
    p = _pipeline(cfg, reg, "nginx/app")
    assert p.sync("v1").result == PUSHED
    reg.manifests.delete("nginx/app", "v1")
    assert p.sync("v1").result == PUSHED      # the tombstone is sent as a delete
    assert _remote_digest(down.url, "nginx/app", "v1") is None
    assert p.sync("v1").result == CONVERGED


def test_a_reference_written_again_after_its_delete_is_pushed_not_deleted(tmp_path, angos_factory):
    down = angos_factory()
    cfg, reg = _local(tmp_path, down.url)
    content.image(reg, "nginx/app", "v1")
    p = _pipeline(cfg, reg, "nginx/app")
    assert p.sync("v1").result == PUSHED
    reg.manifests.delete("nginx/app", "v1")
    digest, _ = content.image(reg, "nginx/app", "v1", seed=b"again")
    # The job of the delete runs after the tag was written again: it sends the current state.
    assert p.sync("v1").result == PUSHED
    assert _remote_digest(down.url, "nginx/app", "v1") == digest
