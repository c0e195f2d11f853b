"""Event webhooks: what a webhook costs a push.

``python -m bench.webhooks_bench [--quick]`` (also run by ``python -m bench``)
starts three Angos servers (2 workers each, allow-all, fs storage) that differ
only in their webhooks, all subscribed to ``manifest.push`` and ``tag.create``
(two deliveries per push):

- ``none``: no webhook;
- ``async``: an ``async`` webhook to a receiver that answers at once (the
  deliveries are jobs the server's drain runs while the pushes go on);
- ``optional 5ms``: an ``optional`` webhook to a receiver that takes 5 ms
  per answer (both deliveries happen inside the push).

One client pushes manifests by tag (their blobs uploaded beforehand, so only
the manifest ``PUT`` is timed), in interleaved rounds across the three
servers so background load hits them alike; it reports the median and p90
``PUT`` latency of each, and the ``async``/``none`` and ``optional``/``none``
ratios of the medians. Goal: ``async`` indistinguishable from ``none``;
``optional 5ms`` is reported (expect about two receiver answers more). At the
end it checks that every async delivery arrived.

The receivers are threads of this process on 127.0.0.1; nothing else is
contacted.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import requests

from .servers import Angos, free_port

OCI = "application/vnd.oci.image.manifest.v1+json"


class Receiver:
    def __init__(self, delay: float):
        self.delay = delay
        self.count = 0
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as a real receiver would offer

            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if receiver.delay:
                    time.sleep(receiver.delay)
                with receiver._lock:
                    receiver.count += 1
                self.send_response(204)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/events"
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _with_webhook(server: Angos, policy: str, url: str) -> Angos:
    server.config_path.write_text(server.config_path.read_text() + f"""
[global]
event_webhooks = ["bench"]

[event_webhook.bench]
url = "{url}"
policy = "{policy}"
events = ["manifest.push", "tag.create"]
token = "bench-token"
timeout = "5s"
""")
    return server


def _prepare(session: requests.Session, url: str, n: int) -> list[bytes]:
    """Upload one config and layer; return ``n`` distinct manifests referencing them."""
    blobs = []
    for data in (json.dumps({"architecture": "amd64", "os": "linux"}).encode(), b"layer" * 200):
        d = "sha256:" + hashlib.sha256(data).hexdigest()
        session.post(f"{url}/v2/bench/app/blobs/uploads/", params={"digest": d}, data=data).raise_for_status()
        blobs.append({"digest": d, "size": len(data)})
    return [json.dumps({"schemaVersion": 2, "mediaType": OCI, "annotations": {"n": str(i)},
                        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **blobs[0]},
                        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", **blobs[1]}]}).encode()
            for i in range(n)]


def _p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.webhooks_bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="few pushes (a smoke test)")
    args = p.parse_args(argv or [])
    rounds, per_round = (3, 10) if args.quick else (10, 30)
    fast, slow = Receiver(0.0), Receiver(0.005)
    setups = {"none": Angos(), "async": _with_webhook(Angos(), "async", fast.url),
              "optional 5ms": _with_webhook(Angos(), "optional", slow.url)}
    try:
        for server in setups.values():
            server.__enter__()
        sessions = {name: requests.Session() for name in setups}
        bodies = {name: _prepare(sessions[name], s.url, rounds * per_round) for name, s in setups.items()}
        times: dict[str, list[float]] = {name: [] for name in setups}
        for r in range(rounds):
            for name, server in setups.items():
                for i in range(r * per_round, (r + 1) * per_round):
                    t0 = time.perf_counter()
                    resp = sessions[name].put(f"{server.url}/v2/bench/app/manifests/t{i}", data=bodies[name][i],
                                              headers={"Content-Type": OCI})
                    times[name].append(time.perf_counter() - t0)
                    resp.raise_for_status()
        pushes = rounds * per_round
        deadline = time.monotonic() + 60
        while fast.count < 2 * pushes and time.monotonic() < deadline:
            time.sleep(0.1)  # async deliveries drain after the pushes
        print(f"\nEvent webhooks: manifest PUT latency, {pushes} pushes per set-up, 2 deliveries per push")
        print(f"{'set-up':<14} {'median ms':>10} {'p90 ms':>8} {'vs none':>8}")
        base = statistics.median(times["none"])
        for name, values in times.items():
            med = statistics.median(values)
            print(f"{name:<14} {med * 1000:>10.2f} {_p(values, 0.9) * 1000:>8.2f} {med / base:>8.2f}")
        print(f"async deliveries received: {fast.count}/{2 * pushes}; optional: {slow.count}/{2 * pushes}")
        return 0 if fast.count == 2 * pushes and slow.count == 2 * pushes else 1
    finally:
        for server in setups.values():
            server.__exit__(None, None, None)  # also removes the directory of one never started
        fast.stop()
        slow.stop()


if __name__ == "__main__":
    raise SystemExit(main())
