"""Real client: skopeo copies images into angos and back out with digests intact.

The images are OCI layouts built on disk by :mod:`tests.images`; a registry
that rewrote a manifest, lost a blob or mislabelled a media type would change
a digest or make skopeo fail.
"""

from __future__ import annotations

import hashlib
import json

import pytest
import requests

from .conftest import skopeo
from .images import OCI_INDEX, layout_digest, multi_arch_index, single_platform_image


def raw_digest(ref: str) -> str:
    raw = skopeo("inspect", "--raw", "--tls-verify=false", ref).stdout.encode()
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def copy_all(src: str, dst: str, *extra: str) -> None:
    skopeo("copy", "--all", "--src-tls-verify=false", "--dest-tls-verify=false", *extra, src, dst)


@pytest.mark.parametrize("kind", ["single-platform", "multi-arch"])
def test_skopeo_round_trip_through_angos_preserves_digests(angos, tmp_path, kind):
    build = single_platform_image if kind == "single-platform" else multi_arch_index
    image = build(tmp_path / "src", tag="v1")
    remote = f"docker://{angos.host}/skopeo/{kind}:v1"

    copy_all(image.oci_ref, remote)
    assert raw_digest(remote) == image.digest

    # Every child manifest and blob is served by digest with the exact bytes.
    for child in image.manifests:
        r = requests.get(angos.v2(f"skopeo/{kind}/manifests/{child}"),
                         headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
        assert r.status_code == 200
        assert "sha256:" + hashlib.sha256(r.content).hexdigest() == child
    for blob in image.blobs:
        r = requests.get(angos.v2(f"skopeo/{kind}/blobs/{blob}"))
        assert r.status_code == 200
        assert "sha256:" + hashlib.sha256(r.content).hexdigest() == blob

    out = tmp_path / "out"
    copy_all(remote, f"oci:{out}:v1")
    assert layout_digest(out, "v1") == image.digest
    if image.media_type == OCI_INDEX:
        index = json.loads((out / "blobs" / "sha256" / image.digest.split(":")[1]).read_bytes())
        assert [m["digest"] for m in index["manifests"]] == image.manifests


DOCKER_TYPES = {"single": "application/vnd.docker.distribution.manifest.v2+json",
                "multi": "application/vnd.docker.distribution.manifest.list.v2+json"}


def test_docker_registry_to_angos_to_docker_registry_preserves_digests(angos, docker_registry_factory, tmp_path):
    origin = docker_registry_factory()
    target = docker_registry_factory()
    images = {"single": single_platform_image(tmp_path / "single", tag="v1"),
              "multi": multi_arch_index(tmp_path / "multi", tag="v1")}

    # Seed the origin with each image twice: as pushed (OCI manifest / index)
    # and converted to Docker schema 2 (manifest / manifest list), so both
    # families of media types travel through angos.
    for name, image in images.items():
        copy_all(image.oci_ref, f"docker://{origin.host}/lib/{name}-oci:v1")
        copy_all(image.oci_ref, f"docker://{origin.host}/lib/{name}-docker:v1", "--format", "v2s2")

    for repo in ("single-oci", "single-docker", "multi-oci", "multi-docker"):
        src = f"docker://{origin.host}/lib/{repo}:v1"
        via = f"docker://{angos.host}/from-distribution/{repo}:v1"
        dst = f"docker://{target.host}/lib/{repo}:v1"
        expected = raw_digest(src)
        copy_all(src, via)
        assert raw_digest(via) == expected, repo
        copy_all(via, dst)
        assert raw_digest(dst) == expected, repo

    for name, image in images.items():
        assert raw_digest(f"docker://{target.host}/lib/{name}-oci:v1") == image.digest
        for base in (f"{angos.url}/v2/from-distribution", f"{target.url}/v2/lib"):
            r = requests.get(f"{base}/{name}-docker/manifests/v1", headers={"Accept": DOCKER_TYPES[name]})
            assert r.headers["Content-Type"] == DOCKER_TYPES[name], base
