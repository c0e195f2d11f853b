"""The registry core's side of event webhooks, in process (no server): which activities an operation
yields, in what order, with which actor; a watcher's refusal in ``vet`` leaves storage untouched; and
nothing is built for a kind no watcher wants."""

from __future__ import annotations

import hashlib
import json

import pytest

from angos.config import load_config_text
from angos.oci.digest import Digest
from angos.oci.errors import Denied
from angos.registry import build_registry
from angos.registry.events import RETENTION, Activity, Actor
from angos.registry.manifests import WritePolicy

from ..conftest import tree_snapshot

OCI = "application/vnd.oci.image.manifest.v1+json"
ALICE = Actor("user", "alice", "alice", "127.0.0.1")


class Watcher:
    """Wants ``kinds``; records what it vets and what it hears; refuses kinds in ``refuse``."""

    def __init__(self, kinds, refuse=()):
        self.kinds, self.refuse = set(kinds), set(refuse)
        self.vetted: list[Activity] = []
        self.heard: list[Activity] = []

    def wants(self, kind):
        return kind in self.kinds

    def vet(self, act):
        self.vetted.append(act)
        if act.kind in self.refuse:
            raise Denied(f"{act.kind} refused")

    def __call__(self, event):
        if isinstance(event, Activity):
            self.heard.append(event)


@pytest.fixture
def reg(tmp_path):
    cfg = load_config_text(f'[server]\nbind_address = "127.0.0.1"\nworkers = 1\n'
                           f'[blob_store.fs]\nroot_dir = "{tmp_path / "data"}"\n')
    return build_registry(cfg)


def _blob(reg, ns: str, data: bytes, actor=ALICE) -> dict:
    d = Digest.parse("sha256:" + hashlib.sha256(data).hexdigest())
    reg.uploads.monolithic(ns, d, [data], len(data), actor)
    return {"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": str(d), "size": len(data)}


def _manifest(reg, ns: str, seed: str) -> tuple[bytes, str]:
    cfg = _blob(reg, ns, json.dumps({"seed": seed}).encode())
    layer = _blob(reg, ns, f"layer of {seed}".encode())
    body = json.dumps({"schemaVersion": 2, "mediaType": OCI, "config": {**cfg, "mediaType":
                       "application/vnd.oci.image.config.v1+json"}, "layers": [layer]}).encode()
    return body, "sha256:" + hashlib.sha256(body).hexdigest()


def test_push_and_delete_yield_one_activity_per_operation_and_tag_in_order(reg):
    w = Watcher({"manifest.push", "tag.create", "manifest.delete", "tag.delete", "blob.push"})
    reg.listeners.watch(w)
    body, digest = _manifest(reg, "team/app", "a")
    reg.manifests.put("team/app", digest, body, OCI, WritePolicy(), ["v1", "latest"], actor=ALICE)
    reg.manifests.put("team/app", "v1", body, OCI, WritePolicy(), actor=ALICE)  # a re-push moves no tag
    reg.manifests.delete("team/app", digest, actor=RETENTION)
    kinds = [(a.kind, a.tag) for a in w.heard]
    assert kinds[:7] == [("blob.push", None), ("blob.push", None),
                         ("manifest.push", None), ("tag.create", "v1"), ("tag.create", "latest"),
                         ("manifest.push", "v1"), ("manifest.delete", None)], kinds
    assert sorted(kinds[7:]) == [("tag.delete", "latest"), ("tag.delete", "v1")], kinds
    assert [a.id for a in w.vetted] == [a.id for a in w.heard]  # each vetted once, then heard once
    assert {a.actor for a in w.heard[:6]} == {ALICE} and {a.actor for a in w.heard[6:]} == {RETENTION}
    assert all(a.digest == digest for a in w.heard[2:])


def test_a_replicated_write_is_reported_with_the_internal_replication_actor(reg):
    from angos.registry.timestamps import now

    w = Watcher({"manifest.push", "tag.delete"})
    reg.listeners.watch(w)
    body, digest = _manifest(reg, "team/app", "b")
    reg.manifests.put("team/app", "v1", body, OCI, WritePolicy(), source_ts=now(), origin="peer-a", actor=ALICE)
    reg.manifests.delete("team/app", "v1", source_ts=now(), origin="peer-a", actor=ALICE)
    assert [a.actor for a in w.heard] == [Actor("internal", "replication", origin="peer-a")] * 2


def test_a_refusing_watcher_leaves_storage_as_it_was(reg, tmp_path):
    w = Watcher({"manifest.push", "tag.create", "blob.push", "manifest.delete"}, refuse={"tag.create"})
    reg.listeners.watch(w)
    body, digest = _manifest(reg, "team/app", "c")
    before = tree_snapshot(tmp_path / "data")
    with pytest.raises(Denied):
        reg.manifests.put("team/app", "v1", body, OCI, WritePolicy(), actor=ALICE)
    w.refuse = {"blob.push"}
    with pytest.raises(Denied):
        _blob(reg, "team/app", b"refused bytes")
    assert tree_snapshot(tmp_path / "data") == before
    assert [a.kind for a in w.heard] == ["blob.push", "blob.push"]  # only the two uploads before
    w.refuse = set()
    reg.manifests.put("team/app", "v1", body, OCI, WritePolicy(), actor=ALICE)
    w.refuse = {"manifest.delete"}
    with pytest.raises(Denied):
        reg.manifests.delete("team/app", digest, actor=ALICE)
    assert reg.manifests.get("team/app", "v1").digest == Digest.parse(digest)


def test_pulls_build_nothing_and_ask_no_actor_when_unwatched(reg):
    body, digest = _manifest(reg, "team/app", "d")
    reg.manifests.put("team/app", "v1", body, OCI, WritePolicy())

    def never():
        raise AssertionError("the actor was asked for although nobody watches pulls")

    reg.record_pull("team/app", Digest.parse(digest), "v1", never)
    reg.record_blob_pull("team/app", Digest.parse(digest), never)
    w = Watcher({"manifest.pull"})
    reg.listeners.watch(w)
    reg.record_pull("team/app", Digest.parse(digest), "v1", lambda: ALICE)
    reg.record_blob_pull("team/app", Digest.parse(digest), never)  # blob pulls are still unwatched
    assert [(a.kind, a.reference, a.tag, a.actor) for a in w.heard] == [("manifest.pull", "v1", "v1", ALICE)]
