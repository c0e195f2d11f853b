"""Replication status records and wake-ups, without servers: what is written when, what a reader
derives from it, the key names, and a wake-up crossing processes through the waiters' sockets."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from angos.config import ConfigError, load_config_text
from angos.registry.paths import MAX_FILE_NAME, downstream_entry, replication_status
from angos.replication.notify import SocketPublisher, Waiters
from angos.replication.status import (DOWN, FAILED, IN_SYNC, PENDING, SUPERSEDED, DownstreamRecords, LocalState,
                                      TagStatusStore, downstream_view)
from angos.storage.fs import FsStore

from ..conftest import ROOT

D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64
T1 = "2030-01-01T00:00:00.000001Z"
T2 = "2030-01-01T00:00:01.000001Z"


@pytest.fixture
def store(tmp_path):
    return FsStore(str(tmp_path / "meta"))


def _writes(store):
    published = []
    return TagStatusStore(store, lambda ns, tag: published.append((ns, tag))), published


def test_a_record_is_written_only_when_it_changes(store):
    tags, published = _writes(store)
    about = LocalState(D1, T1)
    assert tags.settle("nginx/app", "eu", "v1", about, IN_SYNC, remote_digest=D1) is True
    key = store._path(replication_status("nginx/app", "eu", "v1"))
    first = os.stat(key).st_mtime_ns, tags.get("nginx/app", "eu", "v1")
    # A reconcile confirming the same state again: nothing written, nobody woken.
    for _ in range(3):
        assert tags.settle("nginx/app", "eu", "v1", about, IN_SYNC, remote_digest=D1) is False
    assert (os.stat(key).st_mtime_ns, tags.get("nginx/app", "eu", "v1")) == first
    assert published == [("nginx/app", "v1")]
    # A new state of the tag is a change.
    assert tags.settle("nginx/app", "eu", "v1", LocalState(D2, T2), IN_SYNC, remote_digest=D2) is True
    assert published == [("nginx/app", "v1")] * 2


def test_failures_are_rewritten_per_attempt_and_keep_when_they_began(store):
    tags, _ = _writes(store)
    about = LocalState(D1, T1)
    assert tags.settle("ns", "eu", "v1", about, FAILED, attempts=1, max_attempts=3, error="403 DENIED")
    since = tags.get("ns", "eu", "v1")["since"]
    assert tags.settle("ns", "eu", "v1", about, FAILED, attempts=1, max_attempts=3, error="403 DENIED") is False
    assert tags.settle("ns", "eu", "v1", about, FAILED, attempts=2, max_attempts=3, error="403 DENIED") is True
    rec = tags.get("ns", "eu", "v1")
    assert (rec["attempts"], rec["since"], rec["error"]) == (2, since, "403 DENIED")
    assert tags.settle("ns", "eu", "v1", about, FAILED, attempts=3, error="x" * 5000, final=True)
    assert len(tags.get("ns", "eu", "v1")["error"]) == 500 and tags.get("ns", "eu", "v1")["final"] is True


def test_down_never_replaces_in_sync_of_the_same_state_but_replaces_anything_else(store):
    tags, _ = _writes(store)
    about = LocalState(D1, T1)
    tags.settle("ns", "eu", "v1", about, IN_SYNC, remote_digest=D1)
    assert tags.settle("ns", "eu", "v1", about, DOWN, error="refused", since="2030-01-02T00:00:00.000000Z") is False
    assert tags.get("ns", "eu", "v1")["state"] == IN_SYNC
    newer = LocalState(D2, T2)
    assert tags.settle("ns", "eu", "v1", newer, DOWN, error="refused", since="2030-01-02T00:00:00.000000Z")
    rec = tags.get("ns", "eu", "v1")
    assert (rec["state"], rec["since"], rec["digest"]) == (DOWN, "2030-01-02T00:00:00.000000Z", D2)
    # Another deferral while it stays down (another reason, another process's clock): unchanged.
    assert tags.settle("ns", "eu", "v1", newer, DOWN, error="timed out", since="2030-01-03T00:00:00.000000Z") is False


def test_a_reader_derives_pending_from_the_current_local_state():
    record = {"state": IN_SYNC, "digest": D1, "deleted": False, "author_time": T1, "remote_digest": D1,
              "since": T1, "attempts": 0}
    assert downstream_view("eu", record, LocalState(D1, T1))["state"] == IN_SYNC
    # The tag moved on: pending since the new write's author time, whatever the record says.
    view = downstream_view("eu", record, LocalState(D2, T2))
    assert (view["state"], view["since"], view["remote_digest"]) == (PENDING, T2, None)
    # The same digest written again later: pending, and a failure's attempts and error carry over.
    failed = dict(record, state=FAILED, attempts=3, max_attempts=5, error="403 DENIED")
    view = downstream_view("eu", failed, LocalState(D1, T2))
    assert (view["state"], view["attempts"], view["error"]) == (PENDING, 3, "403 DENIED")
    assert downstream_view("eu", failed, LocalState(D2, T2))["attempts"] == 0
    # A delete is a state like any other.
    deleted = downstream_view("eu", record, LocalState(None, T2))
    assert deleted["state"] == PENDING
    # No record at all and the downstream known to be down: down since then.
    view = downstream_view("eu", None, LocalState(D1, T1), {"up": False, "since": T2, "last_error": "refused"})
    assert (view["state"], view["since"], view["error"]) == (DOWN, T2, "refused")
    superseded = dict(record, state=SUPERSEDED, remote_digest=D2, remote_author_time=T2)
    view = downstream_view("eu", superseded, LocalState(D1, T1), {"up": False, "since": T2})
    assert (view["state"], view["remote_digest"], view["remote_author_time"]) == (SUPERSEDED, D2, T2)


def test_downstream_records_report_transitions(store):
    records = DownstreamRecords(store)
    assert records.get("eu") is None
    records.down("eu", 1893456000.0, "refused")
    rec = records.get("eu")
    assert (rec["up"], rec["since"], rec["last_error"]) == (False, "2030-01-01T00:00:00.000000Z", "refused")
    records.success("eu")  # a success while recorded down: up again at once
    rec = records.get("eu")
    assert rec["up"] is True and rec["since"] == rec["last_success"] and rec["last_error"] == "refused"


def test_downstream_names_become_bounded_file_names():
    assert downstream_entry("eu-region") == "eu-region"
    for hostile in ("..", ".", "a/b", "../../etc", "", "%2F", "~x"):
        entry = downstream_entry(hostile)
        assert "/" not in entry and entry not in ("", ".", "..") and not entry.startswith("."), hostile
    assert len({downstream_entry(n) for n in ("a/b", "a%2Fb", "a.b", "a%2Eb", "", "%")}) == 6
    long_a, long_b = "x" * 300 + "a", "x" * 300 + "b"
    assert len(downstream_entry(long_a)) <= MAX_FILE_NAME and downstream_entry(long_a) != downstream_entry(long_b)
    assert len(downstream_entry("é" * 200)) <= MAX_FILE_NAME


def test_max_status_wait_secs_is_validated():
    base = '[server]\nbind_address = "127.0.0.1"\n[blob_store.fs]\nroot_dir = "/tmp/x"\n'
    assert load_config_text(base).global_.replication.max_status_wait_secs == 300
    for bad in ("0", "3601", '"5m"'):
        with pytest.raises(ConfigError, match=r"^global\.replication\.max_status_wait_secs: "):
            load_config_text(base + f"[global.replication]\nmax_status_wait_secs = {bad}\n")


def _config(jobs_root):
    return load_config_text(f'[server]\nbind_address = "127.0.0.1"\n[blob_store.fs]\nroot_dir = "{jobs_root}"\n')


def test_a_wake_up_crosses_processes_and_only_wakes_its_tag(tmp_path):
    # A root long enough that the socket path does not fit a Unix address by itself.
    root = tmp_path / ("r" * 90)
    cfg = _config(root)
    hub = Waiters(cfg)
    tag_sub, other_sub, ns_sub = hub.subscribe("nginx/app", "v1"), hub.subscribe("nginx/app", "v2"), \
        hub.subscribe("nginx/app")
    sockets = os.listdir(root / "_jobs" / "status-waiters")
    assert len(sockets) == 1 and len(str(root / "_jobs" / "status-waiters" / sockets[0])) > 107
    code = ("import sys; from angos.config import load_config_text; from angos.replication.notify import "
            "build_publisher; cfg = load_config_text(sys.stdin.read()); build_publisher(cfg)('nginx/app', 'v1')")
    text = f'[server]\nbind_address = "127.0.0.1"\n[blob_store.fs]\nroot_dir = "{root}"\n'
    subprocess.run([sys.executable, "-c", code], input=text, text=True, check=True, cwd=ROOT)
    assert tag_sub.wait(30) is True
    assert ns_sub.wait(30) is True
    assert other_sub.event.is_set() is False  # the wake-up for v1 was dispatched without touching v2's
    for sub in (tag_sub, other_sub, ns_sub):
        sub.__exit__(None, None, None)
    assert hub.count() == 0


def test_a_socket_left_by_a_dead_process_is_removed_by_the_next_publisher(tmp_path):
    import socket

    directory = tmp_path / "waiters"
    directory.mkdir()
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    dead.bind(str(directory / "w1-dead"))
    dead.close()  # the file stays, nobody reads it
    (directory / "not-a-socket.txt").write_text("left alone")
    SocketPublisher(str(directory))("nginx/app", "v1")
    assert sorted(os.listdir(directory)) == ["not-a-socket.txt"]


def test_released_waiters_are_woken_and_new_ones_do_not_sleep(tmp_path):
    hub = Waiters(_config(tmp_path / "data"))
    sub = hub.subscribe("nginx/app", "v1")
    hub.release()
    assert sub.wait(30) is True and sub.released
    late = hub.subscribe("nginx/app", "v2")
    assert late.wait(30) is True


def test_forgetting_a_tombstone_removes_the_tags_records_on_every_downstream(tmp_path):
    from datetime import datetime, timedelta, timezone

    from angos.maintenance import tombstones
    from angos.registry import build_registry

    cfg = load_config_text(f'[server]\nbind_address = "127.0.0.1"\n[blob_store.fs]\nroot_dir = "{tmp_path}"\n'
                           '[global.replication]\ntombstone_horizon = "1h"\n')
    reg = build_registry(cfg)
    old = datetime.now(timezone.utc) - timedelta(hours=2)
    reg.manifests.tombstones.bury_tag("nginx/app", "gone", D1, old)
    reg.manifests.tombstones.bury_tag("nginx/app", "kept", D1, datetime.now(timezone.utc))
    tags = TagStatusStore(reg.meta_store)
    for ds in ("eu", "us/west"):
        for tag in ("gone", "kept"):
            tags.settle("nginx/app", ds, tag, LocalState(None, T1), IN_SYNC)
    assert tombstones.run(cfg, dry_run=False, out=lambda line: None, registry=reg) == 0
    for ds in ("eu", "us/west"):
        assert tags.get("nginx/app", ds, "gone") is None
        assert tags.get("nginx/app", ds, "kept") is not None
