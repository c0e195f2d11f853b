"""Active-active meshes of real Angos servers driven by skopeo (the seed's examples)."""

from __future__ import annotations

import hashlib
import json

import requests

from ..conftest import skopeo, wait_for
from ..images import multi_arch_index, single_platform_image
from .conftest import push_counts, remote_digest, settled

OCI = "application/vnd.oci.image.manifest.v1+json"


def _copy(image, server, ref: str) -> None:
    skopeo("copy", "--all", "--dest-tls-verify=false", image.oci_ref, f"docker://{server.host}/{ref}")


def _push_artifact(server, ns: str, subject_digest: str, subject_size: int) -> str:
    cfg = b"{}"
    cfg_d = "sha256:" + hashlib.sha256(cfg).hexdigest()
    assert requests.post(server.v2(f"{ns}/blobs/uploads/?digest={cfg_d}"), data=cfg).status_code == 201
    body = json.dumps({
        "schemaVersion": 2, "mediaType": OCI, "artifactType": "application/vnd.example.sbom",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": cfg_d, "size": 2},
        "layers": [{"mediaType": "application/vnd.oci.empty.v1+json", "digest": cfg_d, "size": 2}],
        "subject": {"mediaType": OCI, "digest": subject_digest, "size": subject_size},
    }).encode()
    d = "sha256:" + hashlib.sha256(body).hexdigest()
    r = requests.put(server.v2(f"{ns}/manifests/{d}"), data=body, headers={"Content-Type": OCI})
    assert r.status_code == 201, r.text
    return d


def _quiet(servers) -> None:
    """No ping-pong between peers: every replication queue is empty and no server queued anything
    while they were read (:func:`~tests.replication.conftest.settled`). A change bouncing back
    and forth always has a job queued or running, or queues one, so it cannot hide from this."""
    settled(servers)


def test_seed_two_instance_example_converges_both_ways_and_goes_quiet(mesh, tmp_path):
    a, b = mesh(2)
    img = single_platform_image(tmp_path / "img", "v1")
    _copy(img, a, "nginx/app:v1")
    assert wait_for(lambda: remote_digest(b, "nginx/app", "v1") == img.digest, timeout=5)

    idx = multi_arch_index(tmp_path / "idx", "v1")
    _copy(idx, a, "nginx/multi:v1")
    assert wait_for(lambda: remote_digest(b, "nginx/multi", "v1") == idx.digest, timeout=5)
    for child in idx.manifests:
        assert remote_digest(b, "nginx/multi", child) == child

    size = int(requests.head(a.v2(f"nginx/app/manifests/{img.digest}")).headers["Content-Length"])
    art = _push_artifact(a, "nginx/app", img.digest, size)
    assert wait_for(lambda: remote_digest(b, "nginx/app", art) == art, timeout=5)
    refs = requests.get(b.v2(f"nginx/app/referrers/{img.digest}")).json()["manifests"]
    assert [r["digest"] for r in refs] == [art]

    img2 = single_platform_image(tmp_path / "img2", "v2")
    _copy(img2, b, "nginx/app:v2")
    assert wait_for(lambda: remote_digest(a, "nginx/app", "v2") == img2.digest, timeout=5)

    assert requests.delete(a.v2("nginx/app/manifests/v1")).status_code == 202
    assert wait_for(lambda: remote_digest(b, "nginx/app", "v1") is None, timeout=5)
    # B's own copy of v2 and A's digests are untouched by the delete.
    assert remote_digest(b, "nginx/app", "v2") == img2.digest
    _quiet([a, b])
    counts = push_counts(a)
    assert counts.get(("instance-b", "pushed"), 0) >= 4
    assert counts.get(("instance-b", "failed"), 0) == 0


def test_three_instance_ring_converges_and_goes_quiet(mesh, tmp_path):
    a, b, c = mesh(3, edges=[(0, 1), (1, 2), (2, 0)])
    img = single_platform_image(tmp_path / "img", "v1")
    _copy(img, a, "nginx/ring:v1")
    for s in (b, c):
        assert wait_for(lambda s=s: remote_digest(s, "nginx/ring", "v1") == img.digest, timeout=10)
    _quiet([a, b, c])
    # C's push back to A found A already converged: nothing was re-sent around the ring.
    assert push_counts(c).get(("instance-a", "pushed"), 0) == 0


def test_url_path_fans_out_into_sibling_repositories_on_one_instance(angos_factory, tmp_path):
    server = angos_factory(config_text="""\
[server]
bind_address = "127.0.0.1"
port = @PORT@

[blob_store.fs]
root_dir = "@DATA@"

[repository."team"]
[repository."team".access_policy]
default = "allow"
[[repository."team".downstream]]
name = "team-a"
url = "http://127.0.0.1:@PORT@/team-a"
[[repository."team".downstream]]
name = "team-b"
url = "http://127.0.0.1:@PORT@/team-b"
[[repository."team".downstream]]
name = "self"
url = "http://127.0.0.1:@PORT@"

[repository."team-a"]
[repository."team-a".access_policy]
default = "allow"
[repository."team-b"]
[repository."team-b".access_policy]
default = "allow"
""")
    img = single_platform_image(tmp_path / "img", "v1")
    _copy(img, server, "team/app:v1")
    for ns in ("team-a/app", "team-b/app"):
        assert wait_for(lambda ns=ns: remote_digest(server, ns, "v1") == img.digest, timeout=5)
    _quiet([server])
    counts = push_counts(server)
    assert counts.get(("self", "pushed"), 0) == counts.get(("self", "failed"), 0) == 0  # self-loop suppressed
