"""Fixtures for pull-through tests: a real upstream (CNCF Distribution or another Angos), an
optional counting/misbehaving proxy in front of it (:mod:`.proxy`), and an Angos cache whose
repository ``hub`` pulls through them."""

from __future__ import annotations

import hashlib
import textwrap
from urllib.parse import urljoin

import pytest
import requests

from ..conftest import skopeo
from ..images import multi_arch_index, single_platform_image
from ..replication.conftest import _toml
from .proxy import Proxy

MANIFEST_ACCEPT = ("application/vnd.oci.image.manifest.v1+json,application/vnd.oci.image.index.v1+json,"
                   "application/vnd.docker.distribution.manifest.v2+json")


def cache_config(*upstreams: dict, repository: str = "hub", repo_extra: str = "", extra: str = "",
                 workers: int = 2, policy: str = "allow") -> str:
    """Config text (``@PORT@``/``@DATA@`` for angos_factory) of an Angos whose ``repository``
    pulls through ``upstreams`` (dicts of upstream options, in order)."""
    text = (f'[server]\nbind_address = "127.0.0.1"\nport = @PORT@\nworkers = {workers}\n\n'
            f'[blob_store.fs]\nroot_dir = "@DATA@"\n\n[global.access_policy]\ndefault = "{policy}"\n\n'
            f'[repository."{repository}"]\n' + textwrap.dedent(repo_extra) + "\n")
    for up in upstreams:
        text += f'\n[[repository."{repository}".upstream]]\n'
        for key, value in up.items():
            text += f"{key} = {_toml(value)}\n"
    return text + textwrap.dedent(extra)


def push(img, host: str, ref: str, creds: str | None = None) -> None:
    args = ["copy", "--dest-tls-verify=false"]
    if creds:
        args += ["--dest-creds", creds]
    skopeo(*args, "--all", img.oci_ref, f"docker://{host}/{ref}")


def pull(host: str, ref: str, dest, creds: str | None = None, *extra: str):
    args = ["copy", "--src-tls-verify=false"]
    if creds:
        args += ["--src-creds", creds]
    return skopeo(*args, *extra, f"docker://{host}/{ref}", f"oci:{dest}:pulled")


def push_blob(registry_url: str, ns: str, data) -> str:
    """Upload ``data`` (bytes, or a callable returning an iterable of chunks plus the digest) as a
    blob of ``ns`` on a registry (POST, then PUT with the digest); returns the digest."""
    if isinstance(data, bytes):
        digest, body = "sha256:" + hashlib.sha256(data).hexdigest(), data
    else:
        digest, body = data()
    r = requests.post(f"{registry_url}/v2/{ns}/blobs/uploads/")
    assert r.status_code == 202, r.text
    location = urljoin(registry_url, r.headers["Location"])
    sep = "&" if "?" in location else "?"
    r = requests.put(f"{location}{sep}digest={digest}", data=body,
                     headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 201, r.text
    return digest


def random_blob(size: int, seed: int = 0):
    """``push_blob`` data: ``size`` pseudo-random bytes generated twice (hash, then stream), never held whole."""
    import random

    def chunks():
        rng = random.Random(seed)
        left = size
        while left:
            n = min(left, 1 << 20)
            left -= n
            yield rng.randbytes(n)

    def make():
        h = hashlib.sha256()
        for c in chunks():
            h.update(c)
        return "sha256:" + h.hexdigest(), chunks()

    return make


def head_digest(url: str) -> str | None:
    r = requests.head(url, headers={"Accept": MANIFEST_ACCEPT})
    return r.headers.get("Docker-Content-Digest") if r.status_code == 200 else None


def cache_counts(server) -> dict[tuple[str, str, str], float]:
    out = {}
    for line in requests.get(server.url + "/metrics").text.splitlines():
        if line.startswith("angos_cache_requests_total{"):
            labels, value = line.rsplit(" ", 1)
            parts = dict(p.split("=", 1) for p in labels[labels.index("{") + 1:-1].split(","))
            out[(parts["repository"].strip('"'), parts["kind"].strip('"'), parts["result"].strip('"'))] = float(value)
    return out


def stored_blobs(server) -> set[str]:
    """Digests whose bytes are committed in the cache's blob store (never an upload session)."""
    root = server.workdir / "data" / "blobs"
    return {f"{p.parent.parent.name}:{p.name}" for p in root.glob("*/*/*") if p.is_file()} if root.exists() else set()


@pytest.fixture
def upstream(docker_registry_factory):
    """CNCF Distribution, anonymous, as the upstream."""
    return docker_registry_factory()


@pytest.fixture
def proxy_factory():
    proxies: list[Proxy] = []

    def make(target: str, rate: int | None = None) -> Proxy:
        p = Proxy(target, rate).start()
        proxies.append(p)
        return p

    yield make
    for p in proxies:
        p.stop()


@pytest.fixture
def image(tmp_path):
    return single_platform_image(tmp_path / "img", "v1")


@pytest.fixture
def index(tmp_path):
    return multi_arch_index(tmp_path / "idx", "multi")
