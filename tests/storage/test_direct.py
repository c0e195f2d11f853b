"""angos.storage.direct: appends are byte-exact whatever the sizes and offsets, large streams
bypass the page cache, and a filesystem that refuses O_DIRECT gets the same bytes buffered."""

import errno
import os
import subprocess

import pytest
import requests

from angos.storage import direct
from angos.storage.fs import FsStore


def pieces(data: bytes, sizes):
    """Split ``data`` into chunks cycling through ``sizes`` (odd sizes on purpose)."""
    out, i, k = [], 0, 0
    while i < len(data):
        n = sizes[k % len(sizes)]
        out.append(data[i:i + n])
        i += n
        k += 1
    return out


def resident_pages(path) -> int:
    """Pages of ``path`` in the page cache, from util-linux ``fincore``."""
    out = subprocess.run(["fincore", "--bytes", "--noheadings", "--raw", "--output", "PAGES", str(path)],
                         check=True, capture_output=True, text=True).stdout
    return int(out.split()[0])


@pytest.mark.parametrize("existing", [0, 1000, 4096, direct.STAGE + 7])
@pytest.mark.parametrize("size", [0, 1, 5000, direct.STAGE - 1, direct.STAGE, 5 * direct.STAGE + 12345])
def test_append_is_byte_exact_at_any_offset(tmp_path, existing, size):
    path = tmp_path / "f"
    before = os.urandom(existing)
    path.write_bytes(before)
    body = os.urandom(size)
    assert direct.append_stream(str(path), pieces(body, [65536, 1, 300000, 4095, 1 << 20])) == existing + size
    assert path.read_bytes() == before + body


def test_a_missing_file_is_created(tmp_path):
    path = tmp_path / "new"
    assert direct.append_stream(str(path), [b"abc"]) == 3
    assert path.read_bytes() == b"abc"


def test_large_streams_leave_the_page_cache_alone_and_small_ones_use_it(tmp_path):
    big, small = tmp_path / "big", tmp_path / "small"
    direct.append_stream(str(big), pieces(os.urandom(16 << 20), [262144]))
    direct.append_stream(str(small), [os.urandom(200_000)])
    # 16 MiB is 4096 pages; written direct, none of them needs to be cached (the buffered
    # head and tail are under one page each, and the device may keep a few).
    assert resident_pages(big) < 64
    assert resident_pages(small) == (200_000 + 4095) // 4096


def test_a_filesystem_without_o_direct_gets_the_same_bytes(tmp_path, monkeypatch):
    real_open = os.open

    def refusing_open(path, flags, *args):
        if flags & direct._O_DIRECT:
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_open(path, flags, *args)

    monkeypatch.setattr(direct.os, "open", refusing_open)
    path = tmp_path / "f"
    path.write_bytes(b"x" * 10)
    body = os.urandom(3 * direct.STAGE + 99)
    assert direct.append_stream(str(path), pieces(body, [100000])) == 10 + len(body)
    assert path.read_bytes() == b"x" * 10 + body


def test_a_filesystem_that_refuses_direct_writes_after_open_gets_the_same_bytes(tmp_path, monkeypatch):
    import fcntl

    real_pwrite = os.pwrite
    refused = []

    def refusing_pwrite(fd, data, offset):
        if fcntl.fcntl(fd, fcntl.F_GETFL) & direct._O_DIRECT:
            refused.append(offset)
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_pwrite(fd, data, offset)

    monkeypatch.setattr(direct.os, "pwrite", refusing_pwrite)
    path = tmp_path / "f"
    path.write_bytes(b"y" * 5)
    body = os.urandom(4 * direct.STAGE + 777)
    assert direct.append_stream(str(path), pieces(body, [300001])) == 5 + len(body)
    assert path.read_bytes() == b"y" * 5 + body
    assert len(refused) == 1  # the first refusal switches the rest of the stream to buffered writes


def test_a_failing_stream_propagates_and_keeps_a_prefix(tmp_path):
    path = tmp_path / "f"
    body = os.urandom(3 * direct.STAGE)

    def chunks():
        yield from pieces(body, [500000])
        raise ConnectionResetError("client went away")

    with pytest.raises(ConnectionResetError):
        direct.append_stream(str(path), chunks())
    written = path.read_bytes()
    assert body.startswith(written)  # the caller truncates back to its offset
    fds = os.listdir("/proc/self/fd")
    assert not any(os.readlink(f"/proc/self/fd/{fd}") == str(path) for fd in fds if os.path.exists(f"/proc/self/fd/{fd}"))


def test_fs_store_append_goes_through_it_with_sync(tmp_path):
    store = FsStore(str(tmp_path / "root"), sync_to_disk=True)
    body = os.urandom(2 * direct.STAGE + 5)
    assert store.append("_uploads/u/data", pieces(body, [70000])) == len(body)
    assert store.append("_uploads/u/data", [b"tail"]) == len(body) + 4
    assert store.get("_uploads/u/data") == body + b"tail"


@pytest.mark.parametrize("chunked", [False, True])
def test_a_large_upload_through_the_server_is_exact_and_bypasses_the_page_cache(angos, chunked):
    """End to end under gunicorn/gevent, where direct writes run on the hub's native threads."""
    import hashlib

    body = os.urandom(24 << 20)
    digest = "sha256:" + hashlib.sha256(body).hexdigest()
    ns = f"direct/{'chunked' if chunked else 'mono'}"
    # One keep-alive connection, so every PATCH reaches the worker that holds the running
    # hash: a PATCH on another worker re-reads the upload to rebuild it, and that read
    # (rightly) goes through the page cache.
    http = requests.Session()
    if chunked:
        r = http.post(angos.v2(f"{ns}/blobs/uploads/"))
        assert r.status_code == 202
        location = r.headers["Location"]
        step = 5 * 1024 * 1024 + 3  # unaligned chunk boundaries
        for start in range(0, len(body), step):
            part = body[start:start + step]
            r = http.patch(angos.url + location if location.startswith("/") else location, data=part,
                           headers={"Content-Range": f"{start}-{start + len(part) - 1}",
                                    "Content-Type": "application/octet-stream"})
            assert r.status_code == 202, r.text
            location = r.headers["Location"]
        url = angos.url + location if location.startswith("/") else location
        r = http.put(url, params={"digest": digest})
    else:
        r = http.post(angos.v2(f"{ns}/blobs/uploads/"), params={"digest": digest}, data=body,
                      headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 201, r.text
    blob = angos.workdir / "data" / "blobs" / "sha256" / digest[7:9] / digest[7:]
    assert blob.stat().st_size == len(body)
    assert resident_pages(blob) < (len(body) // 4096) // 8  # most of the 6144 pages went direct
    assert http.get(angos.v2(f"{ns}/blobs/{digest}")).content == body


def test_direct_io_false_writes_uploads_through_the_page_cache(angos_factory):
    """``[blob_store.fs] direct_io = false``: the operator's choice of a first pull served from memory."""
    import hashlib

    server = angos_factory(extra="direct_io = false\n")  # appended to the [blob_store.fs] table
    body = os.urandom(8 << 20)
    digest = "sha256:" + hashlib.sha256(body).hexdigest()
    r = requests.post(server.v2("buffered/app/blobs/uploads/"), params={"digest": digest}, data=body,
                      headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 201, r.text
    blob = server.workdir / "data" / "blobs" / "sha256" / digest[7:9] / digest[7:]
    assert resident_pages(blob) == len(body) // 4096  # every page is still in memory for the first pull
    assert requests.get(server.v2(f"buffered/app/blobs/{digest}")).content == body

