"""``scrub --retention``: CEL rules say what to keep; the rest is deleted through the normal
delete path, so the deletions replicate to downstreams."""

from __future__ import annotations

import json
import re
from datetime import timedelta

import requests

from angos.registry.timestamps import format_ts, now

from ..conftest import wait_for
from ..replication.conftest import remote_digest
from .conftest import OCI, OCI_INDEX, lines, manifest_body, pullable, push, scrub

SOURCE = """\
[server]
bind_address = "127.0.0.1"
port = @PORT@

[blob_store.fs]
root_dir = "@DATA@"

[global.access_policy]
default = "allow"

[repository."topk"]
[repository."topk".retention_policy]
rules = ['image.tag == "latest"', 'top_pushed(2)']
[[repository."topk".downstream]]
name = "peer"
url = "{peer}"

[repository."aged"]
[repository."aged".retention_policy]
rules = ['image.pushed_at > now() - days(30)']
[[repository."aged".downstream]]
name = "peer"
url = "{peer}"
"""


def _tags(server, ns: str) -> list[str]:
    r = requests.get(server.v2(f"{ns}/tags/list"))
    return r.json().get("tags") or [] if r.status_code == 200 else []


def _aged_push(server, ns: str, tag: str, days: float) -> str:
    """A write authored ``days`` ago (as a replicated push carries its origin's author time)."""
    stamp = format_ts(now() - timedelta(days=days))
    return push(server, ns, tag, f"{ns}:{tag}", headers={"X-Angos-Source-Timestamp": stamp})[0]


def test_keep_top_k_and_max_age_rules_delete_exactly_the_expected_tags_and_the_deletions_replicate(angos_factory):
    peer = angos_factory()
    source = angos_factory(config_text=SOURCE.format(peer=peer.url))
    digests = {}
    digests[("topk/app", "latest")] = push(source, "topk/app", "latest", "topk:latest")[0]
    # Two untagged manifests, older than t1: a plain one (deleted: not in the top 2) and a
    # signature of latest (kept: a referrer stays while its subject does).
    latest = digests[("topk/app", "latest")]
    latest_size = len(requests.get(source.v2(f"topk/app/manifests/{latest}"), headers={"Accept": OCI}).content)
    body, topk_sig, _ = manifest_body(source, "topk/app", "sig of latest",
                                      subject={"mediaType": OCI, "digest": latest, "size": latest_size})
    assert requests.put(source.v2(f"topk/app/manifests/{topk_sig}"), data=body,
                        headers={"Content-Type": OCI}).status_code == 201
    body, untagged, _ = manifest_body(source, "topk/app", "untagged")
    assert requests.put(source.v2(f"topk/app/manifests/{untagged}"), data=body,
                        headers={"Content-Type": OCI}).status_code == 201
    for tag in ("t1", "t2", "t3", "t4", "t5"):     # pushed in this order: t5 is the newest
        digests[("topk/app", tag)] = push(source, "topk/app", tag, f"topk:{tag}")[0]
    for tag, days in (("old1", 40), ("old2", 35), ("mid", 29), ("oldsigned", 60)):
        digests[("aged/app", tag)] = _aged_push(source, "aged/app", tag, days)
    digests[("aged/app", "new1")] = push(source, "aged/app", "new1", "aged:new1")[0]
    # A signature of oldsigned: a manifest with referrers is protected whatever the rules say.
    signed = digests[("aged/app", "oldsigned")]
    size = len(requests.get(source.v2(f"aged/app/manifests/{signed}"), headers={"Accept": OCI}).content)
    sig = push(source, "aged/app", "sig-holder", "signature",
               subject={"mediaType": OCI, "digest": signed, "size": size})[0]
    assert requests.delete(source.v2("aged/app/manifests/sig-holder")).status_code == 202  # leave it untagged
    push(source, "free/app", "ancient", "free")  # no policy applies: never touched
    for (ns, tag), d in [*digests.items(), (("topk/app", untagged), untagged), (("topk/app", topk_sig), topk_sig)]:
        assert wait_for(lambda ns=ns, tag=tag, d=d: remote_digest(peer, ns, tag) == d, timeout=30), (ns, tag)

    dry = scrub(source, "--retention", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    planned = [re.match(r"DeleteTag namespace=(\S+) tag=(\S+) digest=(\S+)$", line).groups()
               for line in lines(dry.stdout, "DeleteTag")]
    expected = [("aged/app", "old1"), ("aged/app", "old2"), ("topk/app", "t1"), ("topk/app", "t2"), ("topk/app", "t3")]
    assert sorted((ns, tag) for ns, tag, _ in planned) == expected
    assert all(digests[(ns, tag)] == d for ns, tag, d in planned)
    assert lines(dry.stdout, "DeleteManifest") == [f"DeleteManifest namespace=topk/app digest={untagged}"]
    assert _tags(source, "topk/app") == ["latest", "t1", "t2", "t3", "t4", "t5"]

    real = scrub(source, "--retention")
    assert real.returncode == 0, real.stderr
    assert "deleted=6" in real.stdout
    assert remote_digest(source, "topk/app", untagged) is None
    assert remote_digest(source, "topk/app", topk_sig) == topk_sig
    assert _tags(source, "topk/app") == ["latest", "t4", "t5"]
    assert _tags(source, "aged/app") == ["mid", "new1", "oldsigned"]
    assert _tags(source, "free/app") == ["ancient"]
    assert requests.head(source.v2(f"aged/app/manifests/{sig}")).status_code == 200
    # The deletions went through the event path: the downstream lost exactly the same tags.
    assert wait_for(lambda: _tags(peer, "topk/app") == ["latest", "t4", "t5"], timeout=30), _tags(peer, "topk/app")
    assert wait_for(lambda: _tags(peer, "aged/app") == ["mid", "new1", "oldsigned"], timeout=30), _tags(peer, "aged/app")
    assert wait_for(lambda: remote_digest(peer, "topk/app", untagged) is None, timeout=30)
    assert remote_digest(peer, "topk/app", topk_sig) == topk_sig

    again = scrub(source, "--retention", "--dry-run")
    assert lines(again.stdout, "DeleteTag") == []


def test_a_rule_that_does_not_compile_stops_the_phase_before_anything_is_deleted(angos_factory):
    server = angos_factory(extra="""
[global.retention_policy]
rules = ['image.tag == ']
""")
    push(server, "nginx/app", "v1", "x")
    r = scrub(server, "--retention")
    assert r.returncode == 1
    assert "global.retention_policy.rules[0]" in r.stderr and r.stderr.strip().count("\n") == 0
    assert _tags(server, "nginx/app") == ["v1"]


def test_top_pulled_ranks_by_pull_time_and_a_non_boolean_rule_fails_open(angos_factory):
    server = angos_factory(extra="""
[global]
update_pull_time = true
[global.retention_policy]
rules = ['top_pulled(1)', 'image.tag == "d" ? 42 : false']
""")
    for tag in ("a", "b", "c", "d"):
        push(server, "pulls/app", tag, f"pulls:{tag}")
    for tag in ("b", "c"):  # c is pulled last: the one top_pulled(1) keeps
        assert requests.get(server.v2(f"pulls/app/manifests/{tag}"), headers={"Accept": OCI}).status_code == 200
    real = scrub(server, "--retention")
    assert real.returncode == 0, real.stderr
    assert _tags(server, "pulls/app") == ["c", "d"]
    assert "treating as 'retain' (fail-open)" in real.stderr and "rules[1]" in real.stderr


def test_retention_keeps_the_manifests_an_index_it_keeps_lists(angos_factory):
    # Untagged manifests are candidates like tags (an untagged one matches no tag rule), except an
    # index's platform manifests while the index is there: deleting them would break its pulls.
    server = angos_factory(extra="""
[global.retention_policy]
rules = ['image.tag == "keep"']
""")
    ns = "multi/app"
    children = []
    for arch in ("amd64", "arm64"):
        body, d, _ = manifest_body(server, ns, f"multi:{arch}")
        r = requests.put(server.v2(f"{ns}/manifests/{d}"), data=body, headers={"Content-Type": OCI})
        assert r.status_code == 201, r.text
        children.append({"mediaType": OCI, "digest": d, "size": len(body),
                         "platform": {"os": "linux", "architecture": arch}})
    index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": children}).encode()
    r = requests.put(server.v2(f"{ns}/manifests/keep"), data=index, headers={"Content-Type": OCI_INDEX})
    assert r.status_code == 201, r.text
    loose, _ = push(server, ns, "drop", "multi:drop")
    r = requests.delete(server.v2(f"{ns}/manifests/drop"))
    assert r.status_code == 202, r.text  # the tag goes, its manifest stays: untagged, listed by no index
    dropped, _ = push(server, ns, "drop", "multi:drop-2")

    def stored(d: str) -> bool:
        return requests.head(server.v2(f"{ns}/manifests/{d}"), headers={"Accept": OCI}).status_code == 200

    res = scrub(server, "--retention")
    assert res.returncode == 0, res.stderr
    assert _tags(server, ns) == ["keep"]
    assert not stored(loose) and stored(dropped)  # untagged and listed by no index: deleted; "drop"'s
    res = scrub(server, "--retention")            # manifest, untagged by this run, on the next one
    assert res.returncode == 0, res.stderr
    assert not stored(dropped)
    for child in children:
        assert pullable(server, ns, child["digest"]), child["digest"]
    r = requests.get(server.v2(f"{ns}/manifests/keep"), headers={"Accept": OCI_INDEX})
    assert r.status_code == 200 and r.content == index
