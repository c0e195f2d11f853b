"""What /metrics says about traffic, the build, the processes and the blob store.

- bytes pushed and pulled are counted per configured repository key (``_other`` for a
  namespace no repository claims), exactly: monolithic, chunked-without-length and manifest
  pushes, full and ranged pulls, summed over the gunicorn workers; every configured
  repository has its series from start-up;
- ``angos_build_info{version}`` is 1;
- the process and Python runtime series sum the server's processes: resident memory is more
  than any single worker has, a killed worker's CPU time stays counted;
- the blob store's size (``angos_storage_blobs`` / ``angos_storage_blob_bytes``) follows what
  is on disk, counted every ``storage_usage_refresh_secs``;
- the whole text passes ``promtool check metrics`` after a push and a pull.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import time

import requests

from angos import __version__

from ..conftest import wait_for
from ..replication.test_metrics import metric, push_image, scrape
from ..test_alert_rules import promtool

CONFIG = """
[global]
storage_usage_refresh_secs = 1

[repository."team"]
immutable_tags = false
"""


def _server(angos_factory):
    return angos_factory(extra=CONFIG, workers=2)


def _blob(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _chunked_upload(server, ns: str, data: bytes) -> str:
    """A PATCH without Content-Length (requests sends a generator chunked), then the closing PUT."""
    r = requests.post(server.v2(f"{ns}/blobs/uploads/"), timeout=30)
    assert r.status_code == 202, r.text
    location = r.headers["Location"]
    url = location if location.startswith("http") else server.url + location
    r = requests.patch(url, data=(data[i:i + 4096] for i in range(0, len(data), 4096)), timeout=30)
    assert r.status_code == 202, r.text
    location = r.headers["Location"]
    url = location if location.startswith("http") else server.url + location
    d = _blob(data)
    r = requests.put(url + ("&" if "?" in url else "?") + f"digest={d}", timeout=30)
    assert r.status_code == 201, r.text
    return d


def test_bytes_pushed_and_pulled_are_counted_per_configured_repository(angos_factory):
    server = _server(angos_factory)
    pushed = lambda repo: metric(server, "angos_pushed_bytes_total", repository=repo)  # noqa: E731
    pulled = lambda repo: metric(server, "angos_pulled_bytes_total", repository=repo)  # noqa: E731
    assert (pushed("team"), pulled("team"), pushed("_other")) == (0.0, 0.0, 0.0)  # from start-up

    layer = os.urandom(300_000)
    _, total = push_image(server, "team/app", "v1", layer)
    chunked = os.urandom(70_000)
    _chunked_upload(server, "team/app", chunked)
    assert pushed("team") == total + len(chunked)

    with requests.Session() as s:  # keep-alive: the requests land on either worker
        assert len(s.get(server.v2(f"team/app/blobs/{_blob(layer)}"), timeout=30).content) == len(layer)
        manifest = s.get(server.v2("team/app/manifests/v1"), timeout=30,
                         headers={"Accept": "application/vnd.oci.image.manifest.v1+json"}).content
        r = s.get(server.v2(f"team/app/blobs/{_blob(layer)}"), headers={"Range": "bytes=10-19"}, timeout=30)
        assert r.status_code == 206 and len(r.content) == 10
        assert s.head(server.v2(f"team/app/blobs/{_blob(layer)}"), timeout=30).status_code == 200  # no body
    assert pulled("team") == len(layer) + len(manifest) + 10

    _, other_total = push_image(server, "elsewhere/x", "v1", os.urandom(1000))
    assert pushed("_other") == other_total
    assert pushed("team") == total + len(chunked)
    assert not [k for k in scrape(server) if k[0] == "angos_pushed_bytes_total"
                and dict(k[1])["repository"] not in ("team", "_other")]


def test_build_info_names_the_running_version(angos):
    assert metric(angos, "angos_build_info", version=__version__) == 1.0


def _rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


def test_process_series_sum_the_workers_and_keep_a_killed_workers_cpu_time(angos_factory):
    server = _server(angos_factory)
    workers = server.worker_pids()
    assert len(workers) == 2
    # More than any single worker holds: the series is a sum, not whichever worker answered.
    wait_for(lambda: (metric(server, "process_resident_memory_bytes") or 0) > 1.3 * max(map(_rss, workers)),
             what="resident memory summed over the workers")
    samples = scrape(server)
    assert samples[("process_open_fds", ())] > 3 * 2
    assert 0 < samples[("process_start_time_seconds", ())] <= time.time()
    assert samples[("process_max_fds", ())] > 0
    assert samples[("python_gc_collections_total", (("generation", "0"),))] > 0
    assert [k for k in samples if k[0] == "python_info"]

    for _ in range(50):  # some CPU time in the workers
        requests.get(server.url + "/metrics", timeout=30)
    cpu = wait_for(lambda: metric(server, "process_cpu_seconds_total"), what="cpu seconds")
    victim = workers[0]
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: victim not in server.worker_pids() and len(server.worker_pids()) == 2, timeout=120,
             what="gunicorn to replace the killed worker")
    requests.get(server.url + "/healthz", timeout=30)
    assert metric(server, "process_cpu_seconds_total") >= cpu  # a counter never goes back


def test_a_process_that_exits_before_publishing_leaves_no_zero_start_time_or_fd_limit(tmp_path):
    """Any process importing angos.metrics under PROMETHEUS_MULTIPROC_DIR gets these two gauges at
    once; they must hold its own values then, not 0, or ``min`` would report 0 from then on."""
    import sys

    from prometheus_client import CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector

    env = dict(os.environ, PROMETHEUS_MULTIPROC_DIR=str(tmp_path))
    subprocess.run([sys.executable, "-c", "import angos.metrics"], env=env, check=True, timeout=60)
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(tmp_path))
    assert 0 < registry.get_sample_value("process_start_time_seconds") <= time.time()
    assert registry.get_sample_value("process_max_fds") > 0


def _blobs_on_disk(server) -> tuple[int, int]:
    files = [p for p in (server.workdir / "data" / "blobs").rglob("*") if p.is_file()]
    return len(files), sum(p.stat().st_size for p in files)


def test_storage_usage_follows_the_blob_store(angos_factory):
    server = _server(angos_factory)
    usage = lambda: (metric(server, "angos_storage_blobs"), metric(server, "angos_storage_blob_bytes"))  # noqa: E731
    wait_for(lambda: usage() == (0.0, 0.0), what="an empty store counted")
    push_image(server, "team/app", "v1", os.urandom(200_000), note="v1")
    push_image(server, "team/app", "v2", os.urandom(5000), note="v2")
    on_disk = _blobs_on_disk(server)
    assert on_disk[0] == 4  # two configs, two layers (manifests live in the metadata tree)
    wait_for(lambda: usage() == tuple(map(float, on_disk)), what=f"the count to reach {on_disk}")
    assert metric(server, "angos_storage_scan_duration_seconds") >= 0


def test_metrics_pass_promtool_check_after_a_push_and_a_pull(angos_factory):
    server = _server(angos_factory)
    layer = os.urandom(100_000)
    push_image(server, "team/app", "v1", layer)
    assert requests.get(server.v2(f"team/app/blobs/{_blob(layer)}"), timeout=30).status_code == 200
    wait_for(lambda: metric(server, "angos_storage_blobs") == 2.0, what="the blob count")
    text = requests.get(server.url + "/metrics", timeout=30).text
    for name in ("process_resident_memory_bytes", "process_cpu_seconds_total", "python_info",
                 "angos_build_info", "angos_pushed_bytes_total", "angos_pulled_bytes_total",
                 "angos_storage_blob_bytes", "http_request_duration_seconds_bucket"):
        assert f"\n{name}" in text, name
    check = subprocess.run([promtool(), "check", "metrics"], input=text, capture_output=True, text=True, timeout=60)
    assert check.returncode == 0 and not (check.stdout + check.stderr).strip(), check.stdout + check.stderr
