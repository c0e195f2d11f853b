"""Blob throughput: monolithic PUT, GET, chunked upload (MiB/s, higher is better).

Protocol per server, as each client of that server would do it:

- monolithic PUT: angos takes the whole blob on one ``POST ?digest=``;
  Distribution 2.8 has no single-POST upload, so it gets POST then
  ``PUT ?digest=`` with the body (the time covers both requests);
- GET: one request for the whole blob, body discarded by the client;
- first GET after PUT: the same GET, sent as soon as the PUT is answered;
- chunked: POST, then PATCHes with ``Content-Range``, then an empty
  ``PUT ?digest=``.

Each repetition uploads a fresh variant of the data (see
:class:`bench.data.BlobFile`), alternates which server goes first, and starts
after ``os.sync()`` so one server's dirty pages are not written back during
the other's measurement. With ``recycle`` each upload starts right after a
scratch file of its size was written and deleted, so it writes into recycled
rather than never-touched memory (see :func:`bench.data.recycle_memory`).
Throughput is bytes / wall time of the whole flow.
Alongside, the server's own CPU time is recorded (seconds per GiB moved),
which explains a ratio better than wall time alone on a shared machine.
"""

from __future__ import annotations

import os

from .client import Client
from .data import BlobFile, recycle_memory
from .report import Metric
from .servers import Stopwatch

MiB = 1 << 20
GiB = 1 << 30
REPO = "bench/blobs"


def _ordered(servers: dict, i: int) -> list:
    items = list(servers.items())
    return items if i % 2 == 0 else items[::-1]


def _record(metric: Metric, cpu: Metric | None, label: str, i: int, size: int, sw: Stopwatch, log) -> None:
    metric.add(label, size / MiB / sw.wall)
    if cpu is not None:
        cpu.add(label, sw.cpu / (size / GiB))
    log(f"  {metric.name} {label} #{i + 1}: {size / MiB / sw.wall:,.0f} MiB/s ({sw.wall:.2f} s, "
        f"server CPU {sw.cpu:.2f} s)")


def _prepare(recycle: bool, blob: BlobFile, size: int) -> None:
    os.sync()
    if recycle:
        recycle_memory(blob.path.parent, size + 64 * MiB)


def measure_put(servers: dict, blob: BlobFile, repeats: int, metric: Metric, cpu: Metric | None, log,
                recycle: bool = False, first_get: tuple[Metric, Metric] | None = None) -> str:
    """Returns the digest of the last blob uploaded (present on both servers).

    With ``first_get`` (throughput, CPU), each upload is followed at once by a GET of the whole
    blob from the same server: the first pull after a push (what replication, CI pipelines and
    "push then deploy" do), whatever state the upload left the page cache in."""
    digest = ""
    for i in range(repeats):
        digest = blob.variant(i)
        for label, srv in _ordered(servers, i):
            _prepare(recycle, blob, blob.size)
            with Client(srv.port) as c:
                with Stopwatch(srv) as sw:
                    if label == "angos":
                        c.upload_monolithic(REPO, digest, blob.fh, 0, blob.size)
                    else:
                        c.upload_post_put(REPO, digest, blob.fh, 0, blob.size)
                if c.blob_size(REPO, digest) != blob.size:
                    raise RuntimeError(f"{label}: stored blob has the wrong size")
            _record(metric, cpu, label, i, blob.size, sw, log)
            if first_get is not None:
                with Client(srv.port) as c:
                    with Stopwatch(srv) as sw:
                        c.download(f"/v2/{REPO}/blobs/{digest}", blob.size)
                _record(first_get[0], first_get[1], label, i, blob.size, sw, log)
    return digest


def measure_get(servers: dict, digest: str, size: int, repeats: int, metric: Metric, cpu: Metric | None,
                log) -> None:
    path = f"/v2/{REPO}/blobs/{digest}"
    os.sync()
    for label, srv in servers.items():  # warm-up: page cache and worker imports, untimed
        with Client(srv.port) as c:
            c.download(path, size)
    for i in range(repeats):
        for label, srv in _ordered(servers, i):
            with Client(srv.port) as c:
                with Stopwatch(srv) as sw:
                    c.download(path, size)
            _record(metric, cpu, label, i, size, sw, log)


def measure_chunked(servers: dict, blob: BlobFile, total: int, chunk: int, repeats: int, metric: Metric,
                    cpu: Metric | None, log, recycle: bool = False) -> None:
    for i in range(repeats):
        digest = blob.variant(1000 + i, total)
        for label, srv in _ordered(servers, i):
            _prepare(recycle, blob, total)
            with Client(srv.port) as c:
                with Stopwatch(srv) as sw:
                    c.upload_chunked(REPO, digest, blob.fh, 0, total, chunk)
                if c.blob_size(REPO, digest) != total:
                    raise RuntimeError(f"{label}: stored chunked blob has the wrong size")
            _record(metric, cpu, label, i, total, sw, log)
