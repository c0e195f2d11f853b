"""The conflict log's storage on each metadata backend (a filesystem root and S3 on moto): names sort
newest first, pages follow ``last``, protection and trimming read only the records they need; and
the two configuration keys it depends on are validated with the key named."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from angos.config import ConfigError, build_config
from angos.registry import paths
from angos.replication.conflicts import ID, RECEIVER, SENDER, ConflictLog, record_id, record_time

from ..storage.conftest import s3_bucket, store  # noqa: F401  (fixtures: every metadata backend)

T0 = datetime(2026, 7, 1, 12, 0, 0, tzinfo=timezone.utc)


def _add(log: ConflictLog, i: int, at: datetime, ns: str = "team/app") -> dict:
    return log.add(SENDER if i % 2 else RECEIVER, "peer", ns, f"t{i}",
                   {"digest": f"sha256:{'a' * 63}{i}", "author_time": "w", "origin": "b"},
                   {"digest": f"sha256:{'b' * 63}{i}", "author_time": "l", "origin": "a", "stored": True}, at=at)


def test_record_ids_sort_newest_first_and_carry_their_time():
    ids = [record_id(T0 + timedelta(microseconds=k)) for k in (0, 1, 10**6, 86400 * 10**6)]
    assert sorted(ids) == list(reversed(ids))
    assert all(ID.fullmatch(i) for i in ids)
    assert record_time(ids[2]) == T0 + timedelta(seconds=1)
    assert record_time(record_id(datetime(1970, 1, 1, tzinfo=timezone.utc))) == datetime(1970, 1, 1,
                                                                                          tzinfo=timezone.utc)


def test_pages_follow_last_and_stop_with_no_next(store):
    log = ConflictLog(store)
    for i in range(5):
        _add(log, i, T0 + timedelta(minutes=i))
    first, nxt = log.page(2)
    assert [r["tag"] for r in first] == ["t4", "t3"] and nxt == first[-1]["id"]
    second, nxt = log.page(2, nxt)
    assert [r["tag"] for r in second] == ["t2", "t1"]
    third, nxt = log.page(2, nxt)
    assert [r["tag"] for r in third] == ["t0"] and nxt is None
    everything, nxt = log.page(5)
    assert len(everything) == 5 and nxt is None
    assert everything[0]["recorded_at"] == "2026-07-01T12:04:00.000000Z"


def test_a_record_trimmed_between_listing_and_reading_is_skipped(store):
    log = ConflictLog(store)
    recs = [_add(log, i, T0 + timedelta(minutes=i)) for i in range(3)]
    store.put(paths.conflict(recs[1]["id"]), b"not json")
    assert [r["tag"] for r in log.page(10)[0]] == ["t2", "t0"]


def test_protection_covers_the_window_and_trimming_only_the_expired_tail(store):
    log = ConflictLog(store)
    recs = {days: _add(log, days, T0 - timedelta(days=days), ns=f"ns{days}") for days in (0, 3, 8, 40)}
    protected = log.protected_losers(7 * 86400, at=T0)
    assert protected == {(f"ns{d}", recs[d]["loser"]["digest"]) for d in (0, 3)}
    assert log.protected_losers(0, at=T0) == set()
    assert log.expired(T0 - timedelta(days=30)) == [recs[40]["id"]]
    assert log.expired(T0 - timedelta(days=5)) == [recs[40]["id"], recs[8]["id"]]  # oldest first
    log.trim(recs[40]["id"])
    assert [r["tag"] for r in log.page(10)[0]] == ["t0", "t3", "t8"]


BASE = {"server": {"bind_address": "127.0.0.1"}, "blob_store": {"fs": {"root_dir": "/tmp/angos-conflicts"}}}


@pytest.mark.parametrize("table,value,needle", [
    ("global", {"instance_name": "two words"}, "global.instance_name"),
    ("global", {"instance_name": "-leading-dash"}, "global.instance_name"),
    ("global", {"instance_name": "x" * 64}, "global.instance_name"),
    ("global", {"instance_name": 7}, "global.instance_name"),
    ("replication", {"conflict_protection": "a week"}, "global.replication.conflict_protection"),
    ("replication", {"conflict_protection": -1}, "global.replication.conflict_protection"),
])
def test_bad_values_name_their_key(table, value, needle):
    doc = {**BASE, "global": value if table == "global" else {"replication": value}}
    with pytest.raises(ConfigError) as err:
        build_config(doc)
    assert str(err.value).startswith(needle + ":"), str(err.value)


def test_defaults_are_the_host_name_and_seven_days():
    cfg = build_config(dict(BASE))
    assert cfg.global_.replication.conflict_protection == 7 * 86400
    assert cfg.global_.instance_name and len(cfg.global_.instance_name) <= 63
    assert build_config({**BASE, "global": {"instance_name": "eu-1.example"}}).global_.instance_name == "eu-1.example"
