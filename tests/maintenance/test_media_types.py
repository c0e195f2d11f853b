"""``scrub --manifests`` repairs a stored revision whose media type cannot be served.

Older versions accepted a ``mediaType`` ending in a newline; every GET of such a revision
then failed with 500 (a newline cannot go into Content-Type). The revision is planted on disk
here as that version stored it."""

from __future__ import annotations

import json

import requests

from angos.oci.digest import Digest
from angos.registry import paths

from .conftest import OCI, data_path, lines, pullable, push, scrub


def test_an_unservable_media_type_is_reported_and_repaired(angos_factory):
    server = angos_factory()
    ns = "nginx/app"
    d, _ = push(server, ns, "v1", "mt")
    rev = data_path(server, paths.revision(ns, Digest.parse(d)))
    header, _, body = rev.read_bytes().partition(b"\n")
    meta = json.loads(header)
    meta["media_type"] = OCI + "\n"
    rev.write_bytes(json.dumps(meta).encode() + b"\n" + body)
    assert requests.get(server.v2(f"{ns}/manifests/v1")).status_code == 500

    dry = scrub(server, "--manifests", "--dry-run")
    assert dry.returncode == 1   # reported as a problem
    assert lines(dry.stdout, "RepairMediaType") == [f"RepairMediaType namespace={ns} manifest={d} media_type={OCI}"]
    assert requests.get(server.v2(f"{ns}/manifests/v1")).status_code == 500   # dry run changed nothing

    assert scrub(server, "--manifests").returncode == 1
    r = requests.get(server.v2(f"{ns}/manifests/v1"))
    assert r.status_code == 200 and r.headers["Content-Type"] == OCI and r.content == body
    assert pullable(server, ns, "v1")
    again = scrub(server, "--manifests")
    assert again.returncode == 0 and lines(again.stdout, "RepairMediaType") == []
