"""Immutable tags across global and repository settings (SPEC 7).

One server: immutability on globally with exclusions ``^latest$`` and
``^dev-`` (a prefix pattern: exclusions are regex searches, so anchors mean
what they say); repository ``pinned`` brings its own exclusion list, which
replaces the global one; repository ``relaxed`` sets ``immutable_tags =
false``, which cannot switch off the global flag (global OR repository);
with the global flag off, repository ``locked`` is immutable on its own (see
the second server). ``test_manifests.py`` covers the basic overwrite/no-op
behaviour and ``?tag=`` on by-digest pushes.
"""

from __future__ import annotations

import pytest
import requests

from tests.conftest import AngosServer, angos_config, free_port

from .helpers import assert_oci_error, push_image, put_manifest, uniq

GLOBAL_ON = """
[global]
immutable_tags = true
immutable_tags_exclusions = ["^latest$", "^dev-"]

[repository."pinned"]
immutable_tags_exclusions = ["^snap-"]

[repository."relaxed"]
immutable_tags = false
"""

GLOBAL_OFF = """
[global]
immutable_tags_exclusions = ["^latest$"]

[repository."locked"]
immutable_tags = true
"""


def _server(tmp_path_factory, extra):
    workdir = tmp_path_factory.mktemp("angos-immutable")
    port = free_port()
    return AngosServer(workdir, angos_config(workdir / "data", port, 1, extra), port).start()


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    on = _server(tmp_path_factory, GLOBAL_ON)
    off = _server(tmp_path_factory, GLOBAL_OFF)
    yield on, off
    on.stop(timeout=10)
    off.stop(timeout=10)


def _moves(server, ns: str, tag: str) -> int:
    """Push two different images to ``tag``; return the status of the second push."""
    _, body, mt, _ = push_image(server, ns, tag=tag)
    _, other, _, _ = push_image(server, ns)
    r = put_manifest(server, ns, tag, other, mt)
    if r.status_code == 409:
        assert_oci_error(r, 409, "CONFLICT")
        assert requests.get(server.v2(f"{ns}/manifests/{tag}")).content == body, "a refused push moved the tag"
    else:
        assert requests.get(server.v2(f"{ns}/manifests/{tag}")).content == other
    return r.status_code


@pytest.mark.parametrize("repo, tag, status", [
    ("free", "v1", 409),           # no repository: global flag and global exclusions
    ("free", "latest", 201),
    ("free", "dev-feature-x", 201),  # "^dev-" excludes by prefix
    ("free", "my-dev-build", 409),   # ... and only by prefix
    ("pinned", "snap-1", 201),     # the repository list applies ...
    ("pinned", "latest", 409),     # ... and replaces the global one
    ("pinned", "dev-x", 409),
    ("pinned", "v1", 409),
    ("relaxed", "v1", 409),        # repository false does not override global true
    ("relaxed", "latest", 201),    # but the global exclusions still apply there
])
def test_immutability_with_global_immutable_tags_on(servers, repo, tag, status):
    on, _ = servers
    assert _moves(on, f"{repo}/{uniq('img')}", tag) == status


@pytest.mark.parametrize("repo, tag, status", [
    ("free", "v1", 201),      # global off, no repository: everything mutable
    ("locked", "v1", 409),    # a repository flag alone makes its tags immutable
    ("locked", "latest", 201),  # with the global exclusions (no repository list given)
])
def test_immutability_with_global_immutable_tags_off(servers, repo, tag, status):
    _, off = servers
    assert _moves(off, f"{repo}/{uniq('img')}", tag) == status


def test_pushing_the_same_digest_to_an_immutable_tag_is_a_no_op_success(servers):
    on, _ = servers
    ns = f"pinned/{uniq('img')}"
    digest, body, mt, _ = push_image(on, ns, tag="v1")
    r = put_manifest(on, ns, "v1", body, mt)
    assert r.status_code == 201
    assert r.headers["Docker-Content-Digest"] == digest
