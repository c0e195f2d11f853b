"""``angos_storage_blobs`` / ``angos_storage_blob_bytes``: the blob store's size, counted periodically.

One server process at a time (the leader of :func:`angos.queue.gauges.start_refresher`)
counts the blob store every ``[global] storage_usage_refresh_secs`` (300 by
default; 0 turns it off) with :meth:`angos.registry.Registry.blob_usage`: one
listing of ``blobs/`` and no reads, so on a filesystem one ``stat`` per blob
(100,000 blobs: 2 to 5 s on a busy two-core test machine) and on S3 one LIST
request per 1000 blobs. The count yields to other requests as it goes, and its duration
is published as ``angos_storage_scan_duration_seconds`` so the cost can be
watched. Counted incrementally instead, every push, mount, garbage collection and
scrub would have to agree on one shared number across processes and hosts, and
a crash between a write and its count would leave it wrong for good; a periodic
count is never more than one interval out of date.

Blobs in upload sessions and quarantined ones are not counted; a blob shared by
many namespaces counts once (it is stored once).
"""

from __future__ import annotations

import time

from . import metrics as m


def publish(reg) -> None:
    started = time.monotonic()
    count, total = reg.blob_usage()
    m.STORAGE_BLOBS.set(count)
    m.STORAGE_BLOB_BYTES.set(total)
    m.STORAGE_SCAN_DURATION.set(time.monotonic() - started)


def start(cfg, reg) -> None:
    """Count now and every interval in the leading server process (no-op when turned off)."""
    interval = cfg.global_.storage_usage_refresh_secs
    if interval <= 0:
        return
    from .queue.gauges import start_refresher

    start_refresher(lambda: publish(reg), interval, "storage-usage")
