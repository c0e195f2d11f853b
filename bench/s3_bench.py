"""S3-backed angos: blob push/pull throughput and manifest GET rate, redirects on and off.

Self-contained: starts ``moto_server`` (from the venv) and one ``angos server``
whose blob and metadata stores are S3 buckets on it, then measures

- blob push: one monolithic ``POST ?digest=`` and a chunked upload (16 MiB
  ``PATCH``es) of SIZE bytes, with the peak RSS of the gunicorn workers
  sampled during the push (constant memory: it must not grow with SIZE);
- blob pull: ``GET`` following the 307 to the presigned URL (redirect on) and
  inline through angos (``X-Angos-No-Redirect: 1``);
- manifest GET rate with N client threads for D seconds: the 307 itself
  (what the server spends), the redirect followed end to end, and inline.

``python -m bench --only s3`` or ``python bench/s3_bench.py [--quick]``.
moto keeps objects in memory and runs on the same two cores, so the absolute
numbers say more about moto than about a real S3; the on/off ratios and the
flat RSS are the point.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.servers import free_port, wait_url  # noqa: E402 - after the sys.path set-up

MiB = 1024 * 1024


def _config(port: int, endpoint: str, bucket: str) -> str:
    store = f'endpoint = "{endpoint}"\nbucket = "{bucket}"\naccess_key_id = "bench"\nsecret_key = "bench"\n'
    return f"""[server]
bind_address = "127.0.0.1"
port = {port}
workers = 2

[global.access_policy]
default = "allow"

[blob_store.s3]
{store}key_prefix = "blobs"
multipart_part_size = "16MiB"

[metadata_store.s3]
{store}key_prefix = "meta"

[metadata_store.s3.lock_strategy.s3]
"""


def _blocks(size: int, seed: int):
    block = hashlib.sha256(str(seed).encode()).digest() * (MiB // 32)
    sent = 0
    while sent < size:
        n = min(MiB, size - sent)
        yield block[:n] if n < MiB else block
        sent += n


def _digest(size: int, seed: int) -> str:
    h = hashlib.sha256()
    for b in _blocks(size, seed):
        h.update(b)
    return "sha256:" + h.hexdigest()


class _RssSampler(threading.Thread):
    """Peak RSS (MiB) over the server's worker processes while running."""

    def __init__(self, master_pid: int):
        super().__init__(daemon=True)
        self.master = master_pid
        self.peak = 0.0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.05):
            out = subprocess.run(["pgrep", "-P", str(self.master)], capture_output=True, text=True).stdout
            for pid in out.split():
                try:
                    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                        if line.startswith("VmRSS:"):
                            self.peak = max(self.peak, int(line.split()[1]) / 1024)
                except OSError:
                    continue


def _rate(url: str, headers: dict, follow: bool, threads: int, seconds: float) -> float:
    count = [0] * threads
    deadline = time.monotonic() + seconds

    def run(i: int) -> None:
        with requests.Session() as s:
            while time.monotonic() < deadline:
                r = s.get(url, headers=headers, allow_redirects=follow)
                if r.status_code not in (200, 307):
                    raise RuntimeError(f"GET {url}: {r.status_code}")
                count[i] += 1

    ts = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return sum(count) / seconds


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench/s3_bench.py", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small blob, short load runs")
    p.add_argument("--size", default=None, help="blob size in MiB (default 1024, quick 64)")
    p.add_argument("--threads", type=int, default=8)
    args = p.parse_args(argv)
    size = int(args.size or (64 if args.quick else 1024)) * MiB
    seconds = 2.0 if args.quick else 10.0

    tmp = Path(tempfile.mkdtemp(prefix="angos-s3-bench-"))
    procs = []
    try:
        mport = free_port()
        endpoint = f"http://127.0.0.1:{mport}"
        moto = subprocess.Popen([str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p",
                                 str(mport)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
        procs.append(moto)
        wait_url(endpoint + "/moto-api/", moto)
        import boto3

        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="bench",
                     aws_secret_access_key="bench").create_bucket(Bucket="angos-bench")
        port = free_port()
        (tmp / "config.toml").write_text(_config(port, endpoint, "angos-bench"))
        log = open(tmp / "server.log", "ab")
        server = subprocess.Popen([sys.executable, "-m", "angos.cli", "-c", str(tmp / "config.toml"), "server"],
                                  cwd=tmp, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        procs.append(server)
        base = f"http://127.0.0.1:{port}"
        wait_url(base + "/healthz", server)
        rows = []

        # -- push
        digest = _digest(size, 1)
        sampler = _RssSampler(server.pid)
        sampler.start()
        t0 = time.perf_counter()
        r = requests.post(f"{base}/v2/bench/blob/blobs/uploads/?digest={digest}", data=_blocks(size, 1),
                          headers={"Content-Type": "application/octet-stream"})
        mono = time.perf_counter() - t0
        assert r.status_code == 201, r.text
        sampler.stop.set()
        sampler.join()
        rows.append(("blob push, monolithic", f"{size / MiB / mono:.0f} MiB/s",
                     f"peak worker RSS {sampler.peak:.0f} MiB"))

        digest2 = _digest(size, 2)
        t0 = time.perf_counter()
        loc = requests.post(f"{base}/v2/bench/blob/blobs/uploads/").headers["Location"]
        offset, chunk = 0, 16 * MiB
        gen = _blocks(size, 2)
        while offset < size:
            n = min(chunk, size - offset)
            body = b"".join(next(gen) for _ in range((n + MiB - 1) // MiB))
            r = requests.patch(base + loc, data=body, headers={"Content-Range": f"{offset}-{offset + n - 1}",
                                                               "Content-Type": "application/octet-stream"})
            assert r.status_code == 202, r.text
            loc = r.headers["Location"]
            offset += n
        sep = "&" if "?" in loc else "?"
        r = requests.put(f"{base}{loc}{sep}digest={digest2}")
        assert r.status_code == 201, r.text
        rows.append(("blob push, chunked 16 MiB", f"{size / MiB / (time.perf_counter() - t0):.0f} MiB/s", ""))

        # -- pull
        for label, headers in (("blob pull, redirect (followed)", {}),
                               ("blob pull, inline", {"X-Angos-No-Redirect": "1"})):
            t0 = time.perf_counter()
            with requests.get(f"{base}/v2/bench/blob/blobs/{digest}", headers=headers, stream=True) as resp:
                got = sum(len(b) for b in resp.iter_content(MiB))
            assert got == size
            rows.append((label, f"{size / MiB / (time.perf_counter() - t0):.0f} MiB/s", ""))

        # -- manifests
        from tests.api.helpers import push_image

        class _S:
            url = base

            @staticmethod
            def v2(path):
                return f"{base}/v2/{path}"

        push_image(_S, "bench/app", "sha256", tag="latest")
        murl = f"{base}/v2/bench/app/manifests/latest"
        accept = {"Accept": "application/vnd.oci.image.manifest.v1+json"}
        rows.append(("manifest GET, 307 only", f"{_rate(murl, accept, False, args.threads, seconds):.0f} req/s", ""))
        rows.append(("manifest GET, redirect followed",
                     f"{_rate(murl, accept, True, args.threads, seconds):.0f} req/s", ""))
        rows.append(("manifest GET, inline",
                     f"{_rate(murl, {**accept, 'X-Angos-No-Redirect': '1'}, False, args.threads, seconds):.0f} req/s",
                     ""))

        print(f"\nS3 (moto) backed angos, blob {size // MiB} MiB, {args.threads} client threads, "
              f"{seconds:.0f} s load runs\n")
        print("| measurement | result | note |\n|---|---|---|")
        for row in rows:
            print(f"| {row[0]} | {row[1]} | {row[2]} |")
        return 0
    finally:
        for proc in reversed(procs):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
