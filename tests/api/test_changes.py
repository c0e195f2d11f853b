"""``GET /_ext/_changes`` (the change feed) and ``GET /_ext/<ns>/_tags?name=`` over real HTTP:
what is recorded and in which order, paging and its cap, the trimmed-cursor answer, bad input,
the policy (the action itself, and repository policies hiding their entries), and a feed that
cannot be written never failing a push."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time

import requests
from argon2 import PasswordHasher

from tests.conftest import ROOT

from .helpers import OCI_MANIFEST, assert_oci_error, push_image, put_manifest

STAMP = 16


def changes(server, auth=None, **params):
    return requests.get(f"{server.url}/_ext/_changes", params=params, auth=auth, timeout=10)


def feed(server, since=None, n=1000) -> list[dict]:
    """Every change after ``since``, following ``more``."""
    out = []
    while True:
        r = changes(server, **({"since": since} if since else {}), n=n)
        assert r.status_code == 200, r.text
        doc = r.json()
        out += doc["changes"]
        since = doc["next"]
        if not doc["more"]:
            return out


def tag_many(server, ns: str, tags: list[str]) -> str:
    """Point every tag in ``tags`` at one small manifest, a few hundred per request; returns its digest."""
    digest, body, media_type, _ = push_image(server, ns)
    for i in range(0, len(tags), 400):
        r = put_manifest(server, ns, digest, body, media_type, params=[("tag", t) for t in tags[i:i + 400]])
        assert r.status_code == 201, r.text
    return digest


def test_pushes_and_deletes_are_listed_in_order_with_digest_and_author_time(angos_factory):
    server = angos_factory(workers=2)
    a, body, media_type, _ = push_image(server, "team/app", tag="v1")
    b, _, _, _ = push_image(server, "team/app", tag="v2")
    assert put_manifest(server, "team/app", "v1", body, media_type).status_code == 201  # no change: not listed
    assert requests.delete(server.v2("team/app/manifests/v2")).status_code == 202
    push_image(server, "team/app")  # by digest: not a tag change

    doc = changes(server).json()
    got = [(c["namespace"], c["tag"], c["op"], c["digest"]) for c in doc["changes"]]
    assert got == [("team/app", "v1", "push", a), ("team/app", "v2", "push", b), ("team/app", "v2", "delete", b)]
    states = {t["name"]: t for t in requests.get(server.url + "/_ext/team/app/_tags").json()["tags"]}
    assert doc["changes"][0]["author_time"] == states["v1"]["created_at"]
    assert doc["changes"][2]["author_time"] == states["v2"]["deleted_at"]
    cursors = [c["cursor"] for c in doc["changes"]]
    assert cursors == sorted(cursors) and len(set(cursors)) == 3
    assert doc["next"] == cursors[-1] and doc["more"] is False
    assert len(doc["head"]) == STAMP and doc["head"] < cursors[0]  # now minus the grace (2 min by default)
    assert doc["epoch"] and doc["trimmed_before"] is None

    # From a cursor: only what came after it; at the end, an empty page that keeps the cursor.
    assert [c["tag"] for c in changes(server, since=cursors[0]).json()["changes"]] == ["v2", "v2"]
    tail = changes(server, since=cursors[-1]).json()
    assert tail["changes"] == [] and tail["next"] == cursors[-1] and tail["more"] is False
    # A time-only cursor: everything recorded from that microsecond on.
    assert len(changes(server, since=cursors[1][:STAMP]).json()["changes"]) == 2


def test_replicated_writes_are_recorded_with_the_origins_author_time_and_remembered_deletes_too(angos_factory):
    server = angos_factory(workers=1)
    digest, body, media_type, _ = push_image(server, "team/app")
    stamp = "2026-01-02T03:04:05.000006Z"
    r = requests.put(server.v2("team/app/manifests/r1"), data=body,
                     headers={"Content-Type": media_type, "X-Angos-Source-Timestamp": stamp})
    assert r.status_code == 201, r.text
    # A replicated delete of a tag this instance never had deletes nothing (404), but its tombstone
    # now stands: a change like any other.
    gone = "2026-01-02T03:04:06.000007Z"
    r = requests.delete(server.v2("team/app/manifests/never"), headers={"X-Angos-Source-Timestamp": gone})
    assert r.status_code == 404, r.text
    pushed, buried = changes(server).json()["changes"]
    assert (pushed["tag"], pushed["op"], pushed["digest"], pushed["author_time"]) == ("r1", "push", digest, stamp)
    assert (buried["tag"], buried["op"], buried["digest"], buried["author_time"]) == ("never", "delete", None, gone)


def test_paging_follows_next_and_n_is_capped_at_1000(angos_factory):
    server = angos_factory(workers=1)
    tags = [f"t{i:04d}" for i in range(1003)]
    tag_many(server, "team/many", tags)
    first = changes(server, n=2).json()
    assert [c["tag"] for c in first["changes"]] == ["t0000", "t0001"] and first["more"] is True
    second = changes(server, since=first["next"], n=2).json()
    assert [c["tag"] for c in second["changes"]] == ["t0002", "t0003"]
    capped = changes(server, n=5000).json()
    assert len(capped["changes"]) == 1000 and capped["more"] is True
    assert sorted(c["tag"] for c in feed(server, n=5000)) == tags
    empty = changes(server, n=0).json()
    assert empty["changes"] == [] and empty["more"] is True and len(empty["head"]) == STAMP


def test_bad_cursor_and_bad_n_are_refused(angos_factory):
    server = angos_factory(workers=1)
    for bad in ("abc", "123", "1" * 16 + "-XYZ", "../../etc", "1" * 17, "\u0661" * 16):
        assert_oci_error(changes(server, since=bad), 400, "UNSUPPORTED")
    assert_oci_error(changes(server, n="-1"), 400, "UNSUPPORTED")
    assert_oci_error(changes(server, n="ten"), 400, "UNSUPPORTED")


def _scrub(server, *args):
    return subprocess.run([sys.executable, "-m", "angos.cli", "-c", str(server.config_path), "scrub", *args],
                          cwd=server.workdir, capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})


def test_scrub_trims_entries_past_the_horizon_and_older_cursors_get_410(angos_factory):
    server = angos_factory(workers=1, extra='\n[global.replication]\ntombstone_horizon = "1h"\n')
    push_image(server, "team/app", tag="new")
    [new] = changes(server).json()["changes"]
    # An entry recorded two hours ago: the same record under a name stamped then.
    data = server.workdir / "data" / "_changes"
    old_stamp = f"{int((time.time() - 7200) * 1e6):016d}"
    old_name = f"{old_stamp}-{'0' * 12}"
    (data / old_stamp[:7]).mkdir(exist_ok=True)
    shutil.copy(data / new["cursor"][:7] / new["cursor"], data / old_stamp[:7] / old_name)
    assert [c["cursor"] for c in changes(server).json()["changes"]] == [old_name, new["cursor"]]

    dry = _scrub(server, "--tombstones", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "entries=1" in dry.stdout and (data / old_stamp[:7] / old_name).exists()
    res = _scrub(server, "--tombstones")
    assert res.returncode == 0, res.stderr
    assert "changes: removed=1" in res.stdout
    assert not (data / old_stamp[:7] / old_name).exists()

    doc = changes(server).json()
    assert [c["cursor"] for c in doc["changes"]] == [new["cursor"]]
    trimmed = doc["trimmed_before"]
    assert old_stamp < trimmed < new["cursor"]
    gone = assert_oci_error(changes(server, since=old_name), 410, "CURSOR_EXPIRED")
    assert gone["errors"][0]["detail"] == {"trimmed_before": trimmed}
    assert changes(server, since=trimmed).json()["changes"][0]["cursor"] == new["cursor"]


def test_list_changes_is_a_policy_action_and_repository_policies_hide_their_entries(angos_factory):
    pw = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1).hash("s3cret")
    server = angos_factory(workers=1, config_text=f"""\
[server]
bind_address = "127.0.0.1"
port = @PORT@
workers = 1

[blob_store.fs]
root_dir = "@DATA@"

[auth.identity.peer]
username = "peer"
password = "{pw}"

[global.access_policy]
default = "allow"
rules = ["request.action == 'list-changes' && identity.id != 'peer'"]   # allow-by-default: rules deny

[repository."secret"]
[repository."secret".access_policy]
default = "allow"
rules = ["request.action == 'list-changes'"]
""")
    push_image(server, "open/app", tag="v1")
    push_image(server, "secret/app", tag="v1")
    assert_oci_error(changes(server), 401, "UNAUTHORIZED")
    doc = changes(server, auth=("peer", "s3cret")).json()
    assert [(c["namespace"], c["tag"]) for c in doc["changes"]] == [("open/app", "v1")]
    assert doc["more"] is False and doc["next"] > doc["changes"][0]["cursor"]  # moved past the hidden entry


def test_tag_states_by_name(angos_factory):
    server = angos_factory(workers=1)
    digest, _, _, _ = push_image(server, "team/app", tag="v1")
    push_image(server, "team/app", tag="v2")
    assert requests.delete(server.v2("team/app/manifests/v2")).status_code == 202
    r = requests.get(server.url + "/_ext/team/app/_tags", params=[("name", "v2"), ("name", "v1"), ("name", "nope")])
    assert r.status_code == 200, r.text
    tags = r.json()["tags"]
    assert [t["name"] for t in tags] == ["v2", "v1"]
    assert set(tags[0]) == {"name", "deleted_at"} and tags[1]["digest"] == digest
    assert_oci_error(requests.get(server.url + "/_ext/team/app/_tags", params={"name": "../x"}), 400, "TAG_INVALID")
    too_many = [("name", f"t{i}") for i in range(101)]
    assert_oci_error(requests.get(server.url + "/_ext/team/app/_tags", params=too_many), 400, "UNSUPPORTED")


def test_a_feed_that_cannot_be_written_never_fails_the_push(angos_factory):
    server = angos_factory(workers=1)
    push_image(server, "team/app", tag="first")
    data = server.workdir / "data"
    shutil.rmtree(data / "_changes")
    (data / "_changes").write_text("not a directory")  # every entry write now fails
    digest, _, _, _ = push_image(server, "team/app", tag="v1")
    r = requests.get(server.v2("team/app/manifests/v1"), headers={"Accept": OCI_MANIFEST})
    assert r.status_code == 200 and r.headers["Docker-Content-Digest"] == digest
    metrics = requests.get(server.url + "/metrics").text
    assert "angos_change_feed_write_failures_total 1.0" in metrics
    assert "could not record push of team/app:v1 in the change feed" in server.logs()
