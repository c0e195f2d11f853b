"""Memory: a 1 GiB blob is pushed and pulled in constant server memory, and a referrers listing
of 160 MiB is walked a page at a time in about a page of memory, and a 100 MiB push to S3 (48 MiB
parts) holds no part in memory.

The server runs one gunicorn worker so the bytes certainly pass through the
process being measured. A background thread samples ``VmRSS`` of every
worker from ``/proc`` during the transfer; the peak may exceed the baseline
taken after a warm-up round trip by less than 64 MiB. The client streams too:
the body is generated on the fly while hashing and the download is hashed as
it arrives, so the test itself never holds the blob either.
"""

from __future__ import annotations

import hashlib
import threading

import pytest
import requests

from .streams import BLOCK, PseudoRandomBlob, hash_response

SIZE = 1024 * 1024 * 1024
LIMIT = 64 * 1024 * 1024
NS = "memory/app"


def gunicorn_workers(server) -> list[int]:
    """The master's children that are gunicorn workers (forks share the master's
    command line); the in-process job drain child runs another command."""
    def cmdline(pid: int) -> bytes:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                return fh.read()
        except FileNotFoundError:
            return b""
    master = cmdline(server.pid)
    return sorted(pid for pid in server.worker_pids() if cmdline(pid) == master)


def rss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except FileNotFoundError:
        pass
    return 0


class RssSampler(threading.Thread):
    """Track the peak RSS of each of ``pids`` until stopped."""

    def __init__(self, pids: list[int]):
        super().__init__(daemon=True)
        self.pids = pids
        self.peak = {pid: rss_bytes(pid) for pid in pids}
        self.samples = 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(0.02):
            for pid in self.pids:
                self.peak[pid] = max(self.peak[pid], rss_bytes(pid))
            self.samples += 1

    def stop(self) -> dict[int, int]:
        self._stop_event.set()
        self.join(10)
        return self.peak


def push_streamed(server, ns: str, blob: PseudoRandomBlob) -> str:
    """Streamed PATCH (hashing while sending), then close with the computed digest."""
    r = requests.post(server.v2(f"{ns}/blobs/uploads/"))
    assert r.status_code == 202
    hasher = hashlib.sha256()
    r = requests.patch(server.url + r.headers["Location"], data=blob.chunks(hasher=hasher))
    assert r.status_code == 202, r.text
    digest = "sha256:" + hasher.hexdigest()
    r = requests.put(server.url + r.headers["Location"], params={"digest": digest})
    assert r.status_code == 201, r.text
    return digest


def pull_streamed(server, ns: str, digest: str) -> tuple[str, int]:
    with requests.get(server.v2(f"{ns}/blobs/{digest}"), stream=True) as r:
        assert r.status_code == 200
        return hash_response(r)


@pytest.mark.slow
def test_push_and_pull_of_1gib_blob_grow_worker_rss_by_less_than_64mib(angos_factory):
    server = angos_factory(workers=1)
    workers = gunicorn_workers(server)
    assert len(workers) == 1

    # Warm-up: the first upload and download import and allocate whatever the
    # code paths need once; the baseline is taken after that.
    warm = PseudoRandomBlob(4 * BLOCK)
    warm_digest = push_streamed(server, NS, warm)
    assert pull_streamed(server, NS, warm_digest) == (warm_digest, warm.size)
    baseline = {pid: rss_bytes(pid) for pid in workers}
    assert all(baseline.values())

    blob = PseudoRandomBlob(SIZE)
    sampler = RssSampler(workers)
    sampler.start()
    try:
        digest = push_streamed(server, NS, blob)
        pulled = pull_streamed(server, NS, digest)
    finally:
        peak = sampler.stop()

    assert pulled == (digest, SIZE)
    assert sampler.samples > 10
    assert gunicorn_workers(server) == workers, "the worker was replaced during the transfer"
    growth = {pid: peak[pid] - baseline[pid] for pid in workers}
    print(f"\nRSS baseline {baseline} growth {growth} samples {sampler.samples}")
    assert all(g < LIMIT for g in growth.values()), f"RSS grew by {growth} bytes (baseline {baseline})"


def test_listing_referrers_holds_one_page_of_them_not_all(angos_factory):
    # 40 referrers of one subject, each carrying 4 MiB of annotations (the referrers index keeps a
    # referrer's annotations, and a manifest may be 5 MiB): 160 MiB of listing. Any client walks it
    # a page at a time (a page stays under the manifest size limit, so here one referrer per page);
    # each page must cost the worker about a page, where reading every entry first cost all 160 MiB.
    from .api.helpers import OCI_CONFIG, OCI_MANIFEST, descriptor, digest_of, image_manifest, push_blob

    server = angos_factory(workers=1)
    workers = gunicorn_workers(server)
    ns = "memory/referred"
    config = b"{}"
    push_blob(server, ns, config)

    def put(body: bytes) -> str:
        d = digest_of(body)
        r = requests.put(server.v2(f"{ns}/manifests/{d}"), data=body, headers={"Content-Type": OCI_MANIFEST})
        assert r.status_code == 201, r.text
        return d

    subject_body = image_manifest(descriptor(OCI_CONFIG, config), [])
    subject = put(subject_body)
    referrers = {put(image_manifest(descriptor(OCI_CONFIG, config), [], artifact_type="application/x-big",
                                    subject=descriptor(OCI_MANIFEST, subject_body),
                                    annotations={"big": f"{i:04d}" + "x" * (4 * 1024 * 1024)}))
                 for i in range(40)}

    def walk() -> list[str]:
        seen, url = [], server.v2(f"{ns}/referrers/{subject}")
        while url:
            r = requests.get(url)
            assert r.status_code == 200, r.text
            seen += [m["digest"] for m in r.json()["manifests"]]
            link = r.headers.get("Link")
            url = server.url + link.split(";")[0].strip("<>") if link else None
        return seen

    assert sorted(walk()) == sorted(referrers)  # warm-up: every code path allocated once
    baseline = {pid: rss_bytes(pid) for pid in workers}
    sampler = RssSampler(workers)
    sampler.start()
    try:
        listed = walk()
    finally:
        peak = sampler.stop()
    assert listed == sorted(referrers)
    growth = {pid: peak[pid] - baseline[pid] for pid in workers}
    print(f"\nRSS baseline {baseline} growth {growth} samples {sampler.samples}")
    assert all(g < LIMIT for g in growth.values()), f"RSS grew by {growth} bytes (baseline {baseline})"


def test_a_streamed_push_to_s3_holds_no_part_in_memory(angos_factory, moto_server):
    # S3 needs parts of at least 5 MiB, and an upload is staged as readable part objects of
    # multipart_part_size (here 48 MiB): each used to be gathered in memory, and copied once more on
    # its way out, so every concurrent upload cost a worker ~two parts. Parts now wait in a spool
    # that keeps 1 MiB in memory and the rest in a temporary file.
    from tests.conftest import make_bucket
    from tests.storage.conftest import s3_server_config

    text = s3_server_config(0, moto_server, make_bucket(moto_server), redirect=False, workers=1)
    server = angos_factory(config_text=text.replace("port = 0", "port = @PORT@")
                           .replace('multipart_part_size = "5MiB"', 'multipart_part_size = "48MiB"'))
    workers = gunicorn_workers(server)
    warm = PseudoRandomBlob(4 * BLOCK)
    warm_digest = push_streamed(server, NS, warm)
    assert pull_streamed(server, NS, warm_digest) == (warm_digest, warm.size)
    baseline = {pid: rss_bytes(pid) for pid in workers}

    blob = PseudoRandomBlob(100 * 1024 * 1024)  # two full parts and a tail
    sampler = RssSampler(workers)
    sampler.start()
    try:
        digest = push_streamed(server, NS, blob)
    finally:
        peak = sampler.stop()
    assert pull_streamed(server, NS, digest) == (digest, blob.size)
    growth = {pid: peak[pid] - baseline[pid] for pid in workers}
    print(f"\nRSS baseline {baseline} growth {growth} samples {sampler.samples}")
    assert all(g < 32 * 1024 * 1024 for g in growth.values()), f"RSS grew by {growth} bytes (baseline {baseline})"
