"""The conflict log: every write last-writer-wins drops is recorded, with both digests and origins,
on each side that saw it (the sender whose job was superseded, the receiver that refused it), logged
at INFO and counted; and the documented restore recipe brings the loser back.

The active-active test holds its consumers (``[global.job_queue]``, workers started by the test,
see :mod:`.test_tombstones`), so which job reaches the other side first is the test's choice.
"""

from __future__ import annotations

import json
import re
from datetime import timedelta

import pytest
import requests

from angos.registry.timestamps import format_ts, now

from ..conftest import skopeo, wait_for
from .conftest import remote_digest, source_config
from .test_failures import OCI, _small_manifest
from .test_tombstones import HELD, settle

TS = "X-Angos-Source-Timestamp"
INSTANCE = "X-Angos-Source-Instance"


def _push(server, ns: str, tag: str, seed: str, headers: dict | None = None, expect: int = 201) -> str:
    body, d = _small_manifest(server, ns, seed)
    r = requests.put(server.v2(f"{ns}/manifests/{tag}"), data=body, headers={"Content-Type": OCI, **(headers or {})})
    assert r.status_code == expect, r.text
    return d


def _tag_record(server, ns: str, tag: str) -> dict:
    return json.loads((server.workdir / "data" / "repositories" / ns / "_manifests" / "tags" / tag).read_text())


def conflicts(server, **params) -> requests.Response:
    return requests.get(server.url + "/_ext/_replication/conflicts", params=params, timeout=10)


def records(server) -> list[dict]:
    r = conflicts(server, n=1000)
    assert r.status_code == 200, r.text
    return r.json()["conflicts"]


def conflict_count(server, downstream: str, side: str) -> float:
    wanted = f'angos_replication_conflicts_total{{downstream="{downstream}",side="{side}"}} '
    for line in requests.get(server.url + "/metrics", timeout=10).text.splitlines():
        if line.startswith(wanted):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def _log_lines(text: str, *needles: str) -> list[str]:
    return [line for line in text.splitlines()
            if "angos.replication.conflicts" in line and " INFO " in line and all(n in line for n in needles)]


def test_a_dropped_write_is_logged_once_on_each_side_with_both_digests_and_origins(mesh):
    a, b = mesh(2, extra=HELD)
    ns = "nginx/app"
    loser = _push(a, ns, "v1", "written on a")      # the earlier write, on instance-a
    loser_at = _tag_record(a, ns, "v1")["created_at"]
    winner = _push(b, ns, "v1", "written on b")     # the later one, on instance-b
    winner_at = _tag_record(b, ns, "v1")["created_at"]
    assert _tag_record(a, ns, "v1")["origin"] == "instance-a"
    assert _tag_record(b, ns, "v1")["origin"] == "instance-b"

    settle([a, b], first=[a])  # a's job reaches b first: b refuses it, then b's job overwrites a
    assert [remote_digest(s, ns, "v1") for s in (a, b)] == [winner, winner]
    # The winner came to a as a replicated write and keeps its origin there.
    assert _tag_record(a, ns, "v1") == {"digest": winner, "created_at": winner_at, "origin": "instance-b"}

    sender, receiver = records(a), records(b)
    assert len(sender) == 1 and len(receiver) == 1, (sender, receiver)
    won = {"digest": winner, "author_time": winner_at, "origin": "instance-b"}
    lost = {"digest": loser, "author_time": loser_at, "origin": "instance-a"}
    assert {k: sender[0][k] for k in ("side", "peer", "namespace", "tag", "winner", "loser")} == {
        "side": "sender", "peer": "instance-b", "namespace": ns, "tag": "v1", "winner": won,
        "loser": {**lost, "stored": True}}                # a keeps the loser (now untagged)
    assert {k: receiver[0][k] for k in ("side", "peer", "namespace", "tag", "winner", "loser")} == {
        "side": "receiver", "peer": "instance-a", "namespace": ns, "tag": "v1", "winner": won,
        "loser": {**lost, "stored": False}}               # the refused push stored nothing on b
    assert requests.head(a.v2(f"{ns}/manifests/{loser}")).status_code == 200
    assert requests.head(b.v2(f"{ns}/manifests/{loser}")).status_code == 404

    # One INFO line per record naming both digests: b's in the server log, a's in its worker's.
    assert len(_log_lines(b.logs(), ns, winner, loser)) == 1, b.logs()
    worker_log = (a.workdir / "worker.log").read_text()
    assert len(_log_lines(worker_log, ns, winner, loser)) == 1, worker_log
    # The receiver counts it by the losing write's origin (a's sender-side count lives in its worker).
    assert conflict_count(b, "instance-a", "receiver") == 1
    # Each side's downstream row (status API and UI) counts the conflict with its peer.
    for server, peer in ((a, "instance-b"), (b, "instance-a")):
        rows = requests.get(server.url + "/_ext/_replication/downstreams").json()["downstreams"]
        assert [r["conflicts"] for r in rows if r["downstream"] == peer] == [1], rows

    # The documented restore: copy the loser by digest onto the tag, where it was written.
    skopeo("copy", "--src-tls-verify=false", "--dest-tls-verify=false",
           f"docker://{a.host}/{ns}@{loser}", f"docker://{a.host}/{ns}:v1")
    settle([a, b])
    assert [remote_digest(s, ns, "v1") for s in (a, b)] == [loser, loser]
    assert len(records(a)) == 1 and len(records(b)) == 1  # a restore is a newer write, not a conflict


def test_the_sender_counts_its_conflicts_and_an_origin_is_forwarded_unchanged(angos_factory):
    """One-way a → b, drained in-process: the sender's counter is on its own /metrics."""
    b = angos_factory(extra='[global]\ninstance_name = "site-b"\n')
    a = angos_factory(config_text=source_config({"name": "to-b", "url": b.url},
                                                extra='[global]\ninstance_name = "site-a"\n'))
    ns = "nginx/fwd"
    winner = _push(b, ns, "v1", "b's own")
    # A write that reached a from a third instance an hour ago: a forwards it with its origin.
    hour_ago = format_ts(now() - timedelta(hours=1))
    loser = _push(a, ns, "v1", "from c", headers={TS: hour_ago, INSTANCE: "site-c"})
    assert _tag_record(a, ns, "v1")["origin"] == "site-c"

    wait_for(lambda: conflict_count(a, "to-b", "sender") == 1, what="a's sender-side conflict count")
    [sent] = records(a)
    [got] = records(b)
    assert (sent["side"], sent["peer"], sent["loser"]["origin"], sent["winner"]["origin"]) == (
        "sender", "to-b", "site-c", "site-b")
    assert (got["side"], got["peer"], got["loser"]["origin"], got["winner"]["origin"]) == (
        "receiver", "site-c", "site-c", "site-b")
    assert sent["loser"]["digest"] == got["loser"]["digest"] == loser
    assert sent["loser"]["author_time"] == got["loser"]["author_time"] == hour_ago
    assert conflict_count(b, "site-c", "receiver") == 1
    assert remote_digest(b, ns, "v1") == winner


def test_a_refused_replicated_delete_is_logged_with_the_delete_as_the_loser(angos_factory):
    server = angos_factory(extra='[global]\ninstance_name = "here"\n')
    ns = "conflicts/delete"
    d = _push(server, ns, "v1", "kept")
    hour_ago = format_ts(now() - timedelta(hours=1))
    r = requests.delete(server.v2(f"{ns}/manifests/v1"), headers={TS: hour_ago, INSTANCE: "there"})
    assert r.status_code == 409 and r.json()["errors"][0]["detail"]["origin"] == "here"
    [rec] = records(server)
    assert rec["winner"] == {"digest": d, "author_time": _tag_record(server, ns, "v1")["created_at"],
                             "origin": "here"}
    assert rec["loser"] == {"digest": None, "author_time": hour_ago, "origin": "there", "stored": False}
    assert (rec["side"], rec["peer"], rec["tag"]) == ("receiver", "there", "v1")
    # A replicated delete that wins leaves a tombstone that keeps its origin.
    r = requests.delete(server.v2(f"{ns}/manifests/v1"), headers={TS: format_ts(now()), INSTANCE: "there"})
    assert r.status_code == 202
    tomb = server.workdir / "data" / "repositories" / ns / "_tombstones" / "tags" / "v1"
    assert json.loads(tomb.read_text())["origin"] == "there"
    # A replicated push older than that delete loses to it: the winner is the delete.
    _push(server, ns, "v1", "stale", headers={TS: hour_ago, INSTANCE: "elsewhere"}, expect=409)
    newest = records(server)[0]
    assert newest["winner"]["digest"] is None and newest["winner"]["origin"] == "there"
    assert newest["peer"] == "elsewhere" and newest["loser"]["origin"] == "elsewhere"


def test_an_instance_header_is_read_only_with_a_timestamp_and_must_be_a_name(angos_factory):
    server = angos_factory(extra='[global]\ninstance_name = "self"\n')
    ns = "conflicts/header"
    _push(server, ns, "v1", "client", headers={INSTANCE: "someone-else"})  # no timestamp: a client write
    assert _tag_record(server, ns, "v1")["origin"] == "self"
    before = _tag_record(server, ns, "v1")
    r = requests.put(server.v2(f"{ns}/manifests/v1"), data=_small_manifest(server, ns, "garbled")[0],
                     headers={"Content-Type": OCI, TS: format_ts(now()), INSTANCE: "no spaces/slashes"})
    assert r.status_code == 400 and r.json()["errors"][0]["code"] == "UNSUPPORTED"
    assert _tag_record(server, ns, "v1") == before
    # A replicated write without the header (an older peer) has no known origin.
    _push(server, ns, "v2", "older peer", headers={TS: format_ts(now())})
    assert "origin" not in _tag_record(server, ns, "v2")


def test_the_log_pages_newest_first_with_a_link_to_the_next_page(angos_factory):
    server = angos_factory()
    ns = "conflicts/paging"
    hour_ago = format_ts(now() - timedelta(hours=1))
    for i in range(5):
        _push(server, ns, f"t{i}", f"local {i}")
        _push(server, ns, f"t{i}", f"stale {i}", headers={TS: hour_ago}, expect=409)
    seen, url = [], "/_ext/_replication/conflicts?n=2"
    pages = 0
    while url:
        r = requests.get(server.url + url, timeout=10)
        assert r.status_code == 200, r.text
        page = r.json()["conflicts"]
        assert len(page) == (2 if pages < 2 else 1)
        seen += page
        pages += 1
        link = r.headers.get("Link")
        url = re.fullmatch(r'<([^>]+)>; rel="next"', link).group(1) if link else None
    assert pages == 3
    assert [rec["tag"] for rec in seen] == ["t4", "t3", "t2", "t1", "t0"]
    assert [rec["id"] for rec in seen] == sorted(rec["id"] for rec in seen)
    assert all(rec["peer"] == "unknown" and rec["loser"]["origin"] is None for rec in seen)
    # last= continues after any record; n is capped, not refused.
    r = conflicts(server, last=seen[1]["id"], n=100000)
    assert [rec["tag"] for rec in r.json()["conflicts"]] == ["t2", "t1", "t0"] and "Link" not in r.headers


@pytest.mark.parametrize("params", [{"n": "0"}, {"n": "two"}, {"last": "../../etc/passwd"}, {"last": "1-2"}])
def test_malformed_paging_is_refused(angos, params):
    r = conflicts(angos, **params)
    assert r.status_code == 400 and r.json()["errors"][0]["code"] == "UNSUPPORTED"


def test_reading_the_log_is_a_policy_action_of_its_own(angos_factory):
    from ..auth.conftest import identity_toml

    server = angos_factory(config_text=(
        '[server]\nbind_address = "127.0.0.1"\nport = @PORT@\n\n[blob_store.fs]\nroot_dir = "@DATA@"\n\n'
        + identity_toml(admin="s3cret") + "\n[global.access_policy]\ndefault = \"deny\"\nrules = [\n"
        "  \"request.action != 'list-replication-conflicts'\",\n"
        "  \"identity.id == 'admin'\",\n]\n"))
    assert conflicts(server).status_code == 401
    assert requests.get(server.url + "/_ext/_jobs?queue=replication").status_code == 200  # other actions pass
    r = requests.get(server.url + "/_ext/_replication/conflicts", auth=("admin", "s3cret"), timeout=10)
    assert r.status_code == 200 and r.json() == {"conflicts": []}
