"""The ObjectStore contract (angos/storage/base.py), one suite for every backend.

Each test runs against the filesystem store and against S3 on a real moto
server (the ``store`` fixture is parametrized), so a backend passes only by
behaving exactly like the other.
"""

from __future__ import annotations

import hashlib
import os
import threading

import pytest

from angos.storage import NotFound

MiB = 1024 * 1024


def _blocks(data: bytes, size: int = 1 << 20):
    for i in range(0, len(data), size):
        yield data[i:i + size]


def test_get_of_a_missing_key_raises_not_found(store):
    with pytest.raises(NotFound):
        store.get("a/missing")
    with pytest.raises(NotFound):
        store.stat("a/missing")
    with pytest.raises(NotFound):
        store.open_read("a/missing")
    assert not store.exists("a/missing")


def test_put_then_get_returns_the_bytes_and_put_replaces(store):
    store.put("x/y/z", b"one")
    assert store.get("x/y/z") == b"one"
    store.put("x/y/z", b"two!")
    assert store.get("x/y/z") == b"two!"
    assert store.stat("x/y/z").size == 4
    assert store.exists("x/y/z")


def test_put_if_absent_creates_only_once(store):
    assert store.put_if_absent("k/once", b"first") is True
    assert store.put_if_absent("k/once", b"second") is False
    assert store.get("k/once") == b"first"


def test_put_if_absent_has_exactly_one_winner_among_concurrent_callers(store):
    wins = []

    def race(i):
        if store.put_if_absent("k/race", str(i).encode()):
            wins.append(i)

    threads = [threading.Thread(target=race, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 1
    assert store.get("k/race") == str(wins[0]).encode()


def test_delete_is_idempotent_and_delete_prefix_removes_a_subtree(store):
    store.put("d/a/1", b"1")
    store.put("d/a/2", b"2")
    store.put("d/b/1", b"3")
    store.delete("d/a/1")
    store.delete("d/a/1")
    assert not store.exists("d/a/1")
    store.delete_prefix("d/a")
    assert not store.exists("d/a/2")
    assert store.get("d/b/1") == b"3"
    store.delete_prefix("d/never")


def test_list_is_recursive_and_children_lists_one_level(store):
    for key in ("l/a/1", "l/a/2", "l/b/c/3", "l/top"):
        store.put(key, b"")
    assert sorted(store.list("l")) == ["l/a/1", "l/a/2", "l/b/c/3", "l/top"]
    assert store.children("l") == ["a", "b", "top"]
    assert store.children("l/b") == ["c"]
    assert store.children("l/none") == []
    assert list(store.list("l/none")) == []


def test_sizes_lists_every_object_under_a_prefix_with_its_size(store):
    store.put("s/a/one", b"1")
    store.put("s/a/b/three", b"333")
    store.put("s/two", b"22")
    store.put("t/outside", b"xxxx")
    store.put("s/appended", b"")
    for piece in (4 * MiB, 3 * MiB + 1, 6 * MiB, 7):  # on S3, an object of several parts
        store.append("s/appended", _blocks(b"5" * piece, 300_000))
    store.put("s/appendedx", b"x")  # sorts between the object and its parts on S3
    appended = 13 * MiB + 8
    assert store.stat("s/appended").size == appended
    assert sorted(store.sizes("s")) == [("s/a/b/three", 3), ("s/a/one", 1), ("s/appended", appended),
                                        ("s/appendedx", 1), ("s/two", 2)]
    assert list(store.sizes("nothing/here")) == []


def test_write_stream_stores_many_chunks_and_returns_the_size(store):
    data = os.urandom(3 * MiB + 17)
    assert store.write_stream("s/obj", _blocks(data)) == len(data)
    assert store.get("s/obj") == data


def test_write_stream_larger_than_a_part_is_stored_whole(store):
    data = os.urandom(11 * MiB + 5)
    assert store.write_stream("s/big", _blocks(data)) == len(data)
    assert store.stat("s/big").size == len(data)
    with store.open_read("s/big") as fh:
        assert hashlib.sha256(fh.read()).digest() == hashlib.sha256(data).digest()


def test_write_stream_that_fails_midway_leaves_no_object(store):
    def broken():
        yield os.urandom(6 * MiB)
        raise RuntimeError("client went away")

    with pytest.raises(RuntimeError):
        store.write_stream("s/broken", broken())
    assert not store.exists("s/broken")


def test_open_read_at_an_offset(store):
    store.put("r/o", b"0123456789")
    with store.open_read("r/o", 4) as fh:
        assert fh.read() == b"456789"
    with store.open_read("r/o", 10) as fh:
        assert fh.read() == b""


def test_appends_across_part_boundaries_read_back_exactly(store):
    """Chunked uploads: arbitrary chunk sizes, some crossing the 5 MiB part size."""
    key = "u/1/data"
    store.put(key, b"")
    pieces = [os.urandom(n) for n in (1000, 4 * MiB, 3 * MiB + 1, 7, 6 * MiB)]
    size = 0
    for piece in pieces:
        size = store.append(key, _blocks(piece, 300_000))
    whole = b"".join(pieces)
    assert size == len(whole) == store.stat(key).size
    with store.open_read(key) as fh:
        assert fh.read() == whole
    offset = 5 * MiB + 3
    with store.open_read(key, offset) as fh:
        assert fh.read() == whole[offset:]


def test_append_creates_a_missing_object(store):
    assert store.append("u/2/data", [b"abc"]) == 3
    assert store.get("u/2/data") == b"abc"


def test_an_append_that_fails_midway_leaves_the_previous_size_after_truncate(store):
    """The upload path undoes a failed chunk with truncate(key, previous offset)."""
    key = "u/3/data"
    first = os.urandom(2 * MiB)
    store.append(key, [first])

    def broken():
        yield os.urandom(6 * MiB)
        raise RuntimeError("client went away")

    with pytest.raises(RuntimeError):
        store.append(key, broken())
    store.truncate(key, len(first))
    assert store.stat(key).size == len(first)
    assert store.append(key, [b"tail"]) == len(first) + 4
    with store.open_read(key) as fh:
        assert fh.read() == first + b"tail"


@pytest.mark.parametrize("cut", [0, 100, 5 * MiB, 5 * MiB + 9, 10 * MiB + 1])
def test_truncate_cuts_an_append_object_back_to_any_size(store, cut):
    key = "u/4/data"
    data = os.urandom(12 * MiB)
    store.append(key, _blocks(data))
    store.truncate(key, cut)
    assert store.stat(key).size == cut
    with store.open_read(key) as fh:
        assert fh.read() == data[:cut]
    more = os.urandom(6 * MiB)
    assert store.append(key, [more]) == cut + len(more)
    with store.open_read(key) as fh:
        assert fh.read() == data[:cut] + more


def test_move_renames_and_replaces_the_destination(store):
    store.put("m/src", b"new")
    store.put("m/dst", b"old")
    store.move("m/src", "m/dst")
    assert store.get("m/dst") == b"new"
    assert not store.exists("m/src")
    with pytest.raises(NotFound):
        store.move("m/src", "m/other")


def test_moving_a_multi_part_append_object_yields_a_plain_object(store):
    key = "u/5/data"
    data = os.urandom(11 * MiB + 3)
    store.append(key, _blocks(data))
    store.move(key, "blobs/x")
    assert store.stat("blobs/x").size == len(data)
    assert store.get("blobs/x") == data
    assert not store.exists(key)
    store.delete_prefix("u/5")
    assert list(store.list("u/5")) == []
    assert store.append("blobs/y", [b"z"]) == 1


def test_check_passes_on_a_reachable_backend(store):
    store.check()


def test_presign_is_none_or_a_url_serving_the_object_with_the_asked_content_type(store):
    import requests

    store.put("p/manifest", b'{"a": 1}')
    url = store.presign("p/manifest", "application/vnd.oci.image.manifest.v1+json")
    if store.name == "fs":
        assert url is None
        return
    r = requests.get(url, timeout=10)
    assert r.status_code == 200
    assert r.content == b'{"a": 1}'
    assert r.headers["Content-Type"] == "application/vnd.oci.image.manifest.v1+json"


def test_a_name_of_the_layout_bound_is_stored_listed_and_deleted(store):
    """angos.registry.paths never builds a file name above MAX_FILE_NAME: every backend must take one."""
    from angos.registry.paths import MAX_FILE_NAME

    key = "n/" + "a%2F" * ((MAX_FILE_NAME - 1) // 4) + "z" * ((MAX_FILE_NAME - 1) % 4 + 1)
    assert len(key) - 2 == MAX_FILE_NAME
    assert store.put_if_absent(key, b"one") is True
    store.put(key, b"two")
    assert store.get(key) == b"two"
    assert store.children("n") == [key[2:]] and list(store.list("n")) == [key]
    store.delete(key)
    assert not store.exists(key)


def test_a_key_no_file_could_have_is_absent_not_an_error(store):
    """Revokes delete the unbounded index key an earlier version may have written: where the
    filesystem could never have stored it, reading and deleting it must simply miss."""
    key = "n/" + "b" * 300
    with pytest.raises(NotFound):
        store.get(key)
    with pytest.raises(NotFound):
        store.stat(key)
    assert not store.exists(key)
    store.delete(key)
    assert store.children(key) == []


def test_names_containing_tmp_are_ordinary_names(store):
    """A tag ``1.0.tmp-fix`` or namespace ``a.tmp-b`` is valid; listings must not hide it."""
    for key in ("t/1.0.tmp-fix", "t/a.tmp-b/x"):
        store.put(key, b"")
    assert store.children("t") == ["1.0.tmp-fix", "a.tmp-b"]
    assert sorted(store.list("t")) == ["t/1.0.tmp-fix", "t/a.tmp-b/x"]


def test_fs_hides_only_its_own_temporary_files(tmp_path):
    """In-flight writes (``.tmp-<hex>``) and what an older version's crash left (``<name>.tmp-<32 hex>``)."""
    from angos.storage.fs import FsStore

    store = FsStore(str(tmp_path / "root"))
    store.put("t/v1", b"")
    base = tmp_path / "root" / "t"
    (base / ".tmp-0123456789abcdef0123456789abcdef").write_bytes(b"partial")
    (base / "v2.tmp-0123456789abcdef0123456789abcdef").write_bytes(b"partial")
    assert store.children("t") == ["v1"]
    assert list(store.list("t")) == ["t/v1"]
    # A write never leaves its temporary behind, and its name does not depend on the key's length.
    store.put("t/" + "c" * 250, b"x")
    assert sorted(p.name for p in base.iterdir() if p.name.startswith(".tmp-")) == [
        ".tmp-0123456789abcdef0123456789abcdef"]
