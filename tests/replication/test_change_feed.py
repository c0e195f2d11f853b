"""``angos replicate`` through the change feeds: after a clean run it compares only the tags that
changed on either side since, with the same last-writer-wins outcome as a full comparison; it
compares everything when a feed was trimmed past its cursor, when the downstream has no feed,
with ``--full``, and it keeps its cursors when a job did not get through."""

from __future__ import annotations

import hashlib
import json
import shutil

import pytest
import requests

from ..api.helpers import push_image, put_manifest
from ..conftest import free_port, wait_for
from .conftest import DOWNSTREAM, MESH_CONFIG, remote_digest, source_config
from .test_failures import _locked_peer
from .test_reconcile import _actions, scrub

FAST = '\n[global.replication]\nchange_feed_grace = "1s"\ntombstone_horizon = "1h"\n'


def summary(res) -> dict[str, str]:
    """The key=value pairs of ``angos replicate``'s summary line."""
    line = [ln for ln in res.stdout.splitlines() if ln.startswith("replicate: namespaces=")][-1]
    return dict(kv.split("=", 1) for kv in line.split()[1:])


def replicate(server, *args, expect_rc: int = 0) -> dict[str, str]:
    res = scrub(server, "replicate", *args)
    assert res.returncode == expect_rc, res.stdout + res.stderr
    return summary(res) | {"actions": _actions(res.stdout)}


def head(server, auth=None) -> str:
    r = requests.get(server.url + "/_ext/_changes", params={"n": 0}, auth=auth, timeout=10)
    assert r.status_code == 200, r.text
    return r.json()["head"]


def last_cursor(server, auth=None) -> str:
    doc, since = None, None
    while doc is None or doc["more"]:
        doc = requests.get(server.url + "/_ext/_changes", params={"n": 1000, **({"since": since} if since else {})},
                           auth=auth, timeout=10).json()
        since = doc["next"]
    return since


def past_grace(*servers, auth=None) -> None:
    """Wait until every change recorded so far is older than each feed's head, so a cursor saved from
    now on sorts after them (the positive signal that makes "only the new changes" exact)."""
    for s in servers:
        mark = last_cursor(s, auth)
        wait_for(lambda: head(s, auth) > mark, timeout=30, what=f"the head of {s.url} to pass {mark}")


def tag_many(server, ns: str, tags: list[str], seed: str = "base") -> tuple[str, bytes, str]:
    """Point every tag at one small manifest, a few hundred per request (the same bytes on every
    server for the same ``seed``); returns (digest, body, media type)."""
    config = json.dumps({"seed": seed}).encode()
    d = "sha256:" + hashlib.sha256(config).hexdigest()
    assert requests.post(server.v2(f"{ns}/blobs/uploads/?digest={d}"), data=config).status_code == 201
    body = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                       "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": d,
                                  "size": len(config)}, "layers": []}).encode()
    digest = "sha256:" + hashlib.sha256(body).hexdigest()
    for i in range(0, len(tags), 400):
        r = put_manifest(server, ns, digest, body, "application/vnd.oci.image.manifest.v1+json",
                         params=[("tag", t) for t in tags[i:i + 400]])
        assert r.status_code == 201, r.text
    return digest, body, "application/vnd.oci.image.manifest.v1+json"


def states(server, ns: str) -> dict[str, str | None]:
    """tag -> digest (None for a tombstone), every page."""
    out, url = {}, f"{server.url}/_ext/{ns}/_tags?n=1000"
    while url:
        r = requests.get(url, timeout=30)
        assert r.status_code == 200, r.text
        for t in r.json()["tags"]:
            out[t["name"]] = t.get("digest")
        nxt = r.links.get("next", {}).get("url")
        url = server.url + nxt if nxt else None
    return out


def _change(server, ns: str, prefix: str, other: tuple[str, bytes, str], existing: list[str]) -> list[str]:
    """50 changes: 20 new tags, 15 existing tags moved to ``other``'s manifest, 15 deleted."""
    new = [f"{prefix}-new-{i:02d}" for i in range(20)]
    digest, body, media_type = other
    r = put_manifest(server, ns, digest, body, media_type, params=[("tag", t) for t in new + existing[:15]])
    assert r.status_code == 201, r.text
    for t in existing[15:30]:
        assert requests.delete(server.v2(f"{ns}/manifests/{t}")).status_code == 202
    return new + existing[:30]


def _pair(angos_factory, baseline):
    """Instances a and b, each the other's reconcile-only downstream; b starts as a byte copy of a's
    store after ``baseline(a)`` ran (its change feed left behind: b records its own from then on)."""
    ports = [free_port(), free_port()]
    servers = []
    for me, other in ((0, 1), (1, 0)):
        text = MESH_CONFIG.format(port=ports[me], data="@DATA@", name=f"instance-{'ab'[me]}") + DOWNSTREAM.format(
            name=f"instance-{'ab'[other]}", url=f"http://127.0.0.1:{ports[other]}", mode="reconcile-only") + FAST
        server = angos_factory(config_text=text, start=False)
        server.port, server.url, server.host = ports[me], f"http://127.0.0.1:{ports[me]}", f"127.0.0.1:{ports[me]}"
        servers.append(server)
    a, b = servers
    a.start()
    result = baseline(a)
    shutil.copytree(a.workdir / "data", b.workdir / "data", ignore=shutil.ignore_patterns("_locks", "_jobs",
                                                                                         "_changes"))
    b.start()
    return a, b, result


@pytest.mark.slow
@pytest.mark.timeout(900)  # about 70 s alone; several times that beside a loaded suite
def test_after_a_10000_tag_baseline_replicate_sends_exactly_the_100_changes(angos_factory):
    ns, tags = "nginx/app", [f"t{i:05d}" for i in range(10_000)]
    a, b, (base, other) = _pair(angos_factory, lambda s: (tag_many(s, ns, tags),
                                                          tag_many(s, "nginx/other", ["seed"], seed="other")))
    assert states(a, ns) == states(b, ns) == {t: base[0] for t in tags}
    past_grace(a, b)

    for s in (a, b):  # no cursors yet: every tag is compared, and they agree
        first = replicate(s)
        assert (first["in_full"], first["by_feed"], first["tags_checked"], first["enqueued"]) == ("1", "0", "10001", "0")
    past_grace(a, b)

    # The retags point ns at nginx/other's manifest: its config blob goes along (replication sends it).
    for s in (a, b):
        assert requests.post(s.v2(f"{ns}/blobs/uploads/?mount={json.loads(other[1])['config']['digest']}"
                                  f"&from=nginx/other")).status_code == 201
    on_a = _change(a, ns, "a", other, tags[:30])
    on_b = _change(b, ns, "b", other, tags[30:60])

    # a compares the 100 tags the feeds name; the 20 new on b alone have no state on a to compare.
    dry = replicate(a, "--dry-run")
    assert (dry["by_feed"], dry["in_full"], dry["tags_checked"]) == ("1", "0", "80")
    deleted = set(tags[15:30])
    line = "EnqueueReplication{} downstream=instance-b namespace=nginx/app tag={}".format
    assert dry["actions"] == ([line("Push", t) for t in sorted(set(on_a) - deleted)]
                              + [line("Delete", t) for t in sorted(deleted)])  # b's changes are newer there
    run_a = replicate(a)
    assert (run_a["by_feed"], run_a["tags_checked"], run_a["enqueued"], run_a["waiting"]) == ("1", "80", "50", "0")
    # b's feed now holds a's 50 changes too (replicated writes are recorded), and b has all 100 tags.
    run_b = replicate(b)
    assert (run_b["by_feed"], run_b["tags_checked"], run_b["enqueued"]) == ("1", "100", "50")
    assert states(a, ns) == states(b, ns)
    final = states(a, ns)
    assert all(final[t] is None for t in tags[15:30] + tags[45:60])
    assert all(final[t] == other[0] for t in on_a[:35] + on_b[:35])

    # Converged: the feeds name what the last runs sent, and nothing is left to do; the full
    # comparison agrees.
    again = replicate(a, "--dry-run")
    assert again["by_feed"] == "1" and again["actions"] == []
    full = replicate(a, "--full", "--dry-run")
    assert (full["in_full"], full["by_feed"], full["actions"]) == ("1", "0", [])
    assert int(full["tags_checked"]) == 10_000 + 40 + 1


@pytest.mark.parametrize("trimmed", ["downstream", "local"])
def test_a_feed_trimmed_past_the_cursor_falls_back_to_comparing_everything(angos_factory, trimmed):
    peer = angos_factory(extra=FAST)
    source = angos_factory(config_text=source_config({"name": "peer", "url": peer.url, "mode": "reconcile-only"},
                                                     extra=FAST))
    for i in range(3):
        push_image(source, "nginx/app", tag=f"v{i}")
    first = replicate(source)
    assert (first["in_full"], first["enqueued"]) == ("1", "3")
    # The last clean run was three hours ago, longer than the horizon (1h): both cursors are that old.
    path = [p for p in (source.workdir / "data" / "_changes" / "_cursors").rglob("*") if p.is_file()]
    assert len(path) == 1
    saved = json.loads(path[0].read_text())
    old = f"{int(saved['local'][:16]) - 3 * 3600 * 10**6:016d}"
    path[0].write_text(json.dumps(saved | {"local": old, "remote": old}))
    trimmer = peer if trimmed == "downstream" else source
    res = scrub(trimmer, "scrub", "--tombstones")
    assert res.returncode == 0, res.stderr
    # Meanwhile both sides changed; one change the downstream made is one the source must not undo.
    push_image(source, "nginx/app", tag="late")
    newer, _, _, _ = push_image(peer, "nginx/app", tag="v1")

    run = replicate(source)
    assert (run["in_full"], run["by_feed"], run["tags_checked"], run["enqueued"]) == ("1", "0", "4", "1")
    assert remote_digest(peer, "nginx/app", "late") == remote_digest(source, "nginx/app", "late")
    assert remote_digest(peer, "nginx/app", "v1") == newer
    # The cursors the full run took are fresh: the next run uses the feeds again.
    assert replicate(source)["by_feed"] == "1"


def test_a_downstream_without_a_feed_is_compared_in_full_every_time(angos_factory, docker_registry_factory):
    dist = docker_registry_factory()
    source = angos_factory(config_text=source_config({"name": "dist", "url": dist.url, "mode": "reconcile-only"},
                                                     extra=FAST))
    for i in range(3):
        push_image(source, "nginx/app", tag=f"v{i}")
    first = replicate(source)
    assert (first["in_full"], first["by_feed"], first["tags_checked"], first["enqueued"]) == ("1", "0", "3", "3")
    again = replicate(source)
    assert (again["in_full"], again["by_feed"], again["tags_checked"], again["enqueued"]) == ("1", "0", "3", "0")
    assert not (source.workdir / "data" / "_changes" / "_cursors").exists()  # nothing to resume from


def test_feed_path_maps_prefixed_namespaces_back_and_prunes_only_what_changed(angos_factory):
    mirror = angos_factory(extra=FAST + '\n[repository."mirror"]\n')
    source = angos_factory(config_text=source_config(
        {"name": "mirror", "url": mirror.url + "/mirror", "mode": "reconcile-only", "prune": True}, extra=FAST))
    push_image(source, "nginx/app", tag="v1")
    assert replicate(source)["enqueued"] == "1"
    past_grace(source, mirror)

    newer, _, _, _ = push_image(mirror, "mirror/app", tag="v1")     # newer on the mirror: kept there
    push_image(mirror, "mirror/app", tag="extra")                   # mirror-only: pruned
    push_image(source, "nginx/app", tag="v2")                       # local: pushed
    dry = replicate(source, "--dry-run")
    assert (dry["by_feed"], dry["tags_checked"]) == ("1", "2")  # v1 (named by the mirror's feed) and v2
    assert dry["actions"] == ["EnqueueReplicationPush downstream=mirror namespace=mirror/app tag=v2",
                              "EnqueueReplicationDelete downstream=mirror namespace=mirror/app tag=extra"]
    assert replicate(source)["enqueued"] == "2"
    assert remote_digest(mirror, "mirror/app", "v1") == newer
    assert remote_digest(mirror, "mirror/app", "extra") is None


@pytest.mark.slow
def test_cursors_stay_put_when_a_job_dead_letters_so_the_next_run_sends_it_again(angos_factory):
    auth = ("replicator", "s3cret")
    peer = _locked_peer(angos_factory, "identity.id == 'replicator'")
    source = angos_factory(config_text=source_config(
        {"name": "locked", "url": peer.url, "mode": "reconcile-only", "username": "replicator", "password": "s3cret"},
        extra=FAST.replace("[global.replication]\n", "[global.replication]\nmax_attempts = 2\n"
                                                     "retry_backoff_min_ms = 10\nretry_backoff_max_ms = 20\n")))
    push_image(source, "nginx/app", tag="v0")
    assert replicate(source)["enqueued"] == "1"

    peer.config_path.write_text(peer.config_path.read_text().replace(
        "identity.id == 'replicator'", "identity.id == 'replicator' && request.action != 'put-manifest'"))
    wait_for(lambda: requests.put(peer.v2("nginx/probe/manifests/x"), data=b"{}", auth=auth).status_code == 403,
             what="the peer to refuse manifest pushes")
    d, _, _, _ = push_image(source, "nginx/app", tag="v1")
    past_grace(source)  # v1's entry is now older than any cursor this run could save
    refused = replicate(source)
    assert (refused["by_feed"], refused["enqueued"]) == ("1", "1")
    failed = requests.get(source.url + "/_ext/_jobs/failed?queue=replication").json()["failed"]
    assert len(failed) == 1 and "403" in failed[0]["last_error"]

    peer.config_path.write_text(peer.config_path.read_text().replace(" && request.action != 'put-manifest'", ""))
    wait_for(lambda: requests.put(peer.v2("nginx/probe/manifests/x"), data=b"{}", auth=auth).status_code != 403,
             what="the peer to accept manifest pushes again")
    retried = replicate(source)
    assert (retried["by_feed"], retried["enqueued"]) == ("1", "1")  # v1 read again from the kept cursor
    assert requests.head(peer.v2("nginx/app/manifests/v1"), auth=auth,
                         headers={"Accept": "application/vnd.oci.image.manifest.v1+json"}
                         ).headers.get("Docker-Content-Digest") == d
    assert replicate(source)["enqueued"] == "0"


def test_a_changed_namespace_filter_compares_everything_once(angos_factory):
    peer = angos_factory(extra=FAST)
    source = angos_factory(config_text=source_config(
        {"name": "peer", "url": peer.url, "mode": "reconcile-only", "namespace_filter": ["^nginx/a$"]}, extra=FAST))
    push_image(source, "nginx/a", tag="v1")
    push_image(source, "nginx/b", tag="v1")
    assert replicate(source)["enqueued"] == "1"
    past_grace(source, peer)  # nginx/b:v1 is now before any cursor: only a full run looks at it
    assert replicate(source)["by_feed"] == "1"
    source.config_path.write_text(source.config_path.read_text().replace('namespace_filter = ["^nginx/a$"]\n', ""))
    widened = replicate(source)
    assert (widened["in_full"], widened["tags_checked"], widened["enqueued"]) == ("1", "2", "1")
    assert remote_digest(peer, "nginx/b", "v1") == remote_digest(source, "nginx/b", "v1") is not None
    assert replicate(source)["by_feed"] == "1"
