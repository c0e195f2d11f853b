"""The change feed on each metadata backend (a filesystem root, and S3 on a moto server): order
across buckets, paging, time-only cursors, trim point and epoch, and a dry-run trim."""

from __future__ import annotations

import json
import time

import pytest

from angos.oci.errors import CursorExpired
from angos.registry import paths
from angos.replication.changefeed import ChangeFeed, stamp

from angos.storage.fs import FsStore

from ..conftest import make_bucket
from ..storage.conftest import s3_store


@pytest.fixture(params=["fs", "s3"])
def store(request, tmp_path):
    """A metadata store: a filesystem root, or S3 on the session's moto server (a bucket of its own)."""
    if request.param == "fs":
        return FsStore(str(tmp_path / "root"))
    endpoint = request.getfixturevalue("moto_server")
    return s3_store(endpoint, make_bucket(endpoint))


def _plant(meta, secs_ago: float, tag: str) -> str:
    """An entry recorded ``secs_ago`` seconds ago, written where the feed's layout puts it."""
    name = f"{stamp(time.time() - secs_ago)}-{'a' * 12}"
    body = {"namespace": "team/app", "tag": tag, "op": "push", "digest": "sha256:" + "0" * 64,
            "author_time": "2026-01-01T00:00:00.000000Z"}
    meta.put(paths.change_entry(name[:7], name), json.dumps(body).encode())
    return name


def test_entries_read_in_order_across_buckets_page_by_page(store):
    feed = ChangeFeed(store)
    old = _plant(store, 7200, "old")       # two hours ago: another 1,000 s bucket
    names = [feed.record("team/app", f"t{i}", "push", "sha256:" + "1" * 64, "2026-01-01T00:00:00Z")
             for i in range(3)]
    page = feed.read(None, 2)
    assert [c.tag for c in page.changes] == ["old", "t0"] and page.more and page.next == names[0]
    rest = feed.read(page.next, 2)
    assert [c.tag for c in rest.changes] == ["t1", "t2"] and not rest.more and rest.next == names[2]
    assert feed.read(rest.next, 2).changes == []
    # A time-only cursor: every entry recorded from that microsecond on.
    assert [c.tag for c in feed.read(names[1][:16], 10).changes] == ["t1", "t2"]
    assert feed.read(old, 10).changes[0].cursor == names[0]
    assert feed.state()["epoch"] == page.epoch == rest.epoch


def test_trim_removes_older_entries_and_records_the_point(store):
    feed = ChangeFeed(store)
    old = _plant(store, 7200, "old")
    older = _plant(store, 9000, "older")
    kept = feed.record("team/app", "new", "delete", None, "2026-01-01T00:00:00Z")
    before = stamp(time.time() - 3600)
    assert feed.trim(before, dry_run=True) == 2
    assert [c.tag for c in feed.read(None, 10).changes] == ["older", "old", "new"]  # a dry run changes nothing
    assert feed.state()["trimmed_before"] is None
    assert feed.trim(before) == 2
    assert feed.state()["trimmed_before"] == before
    page = feed.read(None, 10)
    assert [c.cursor for c in page.changes] == [kept] and page.trimmed_before == before
    for cursor in (old, older, "0" * 16):
        with pytest.raises(CursorExpired):
            feed.read(cursor, 10)
    assert [c.tag for c in feed.read(before, 10).changes] == ["new"]
    assert feed.trim(stamp(time.time() - 7200)) == 0  # an earlier point never moves it back
    assert feed.state()["trimmed_before"] == before


def test_each_store_has_its_own_epoch_and_keeps_it(store, tmp_path):
    feed = ChangeFeed(store)
    assert feed.state(create=False)["epoch"] is None  # nothing written by just looking
    epoch = feed.state()["epoch"]
    assert ChangeFeed(store).state()["epoch"] == epoch
    assert ChangeFeed(FsStore(str(tmp_path / "other"))).state()["epoch"] not in (None, epoch)
