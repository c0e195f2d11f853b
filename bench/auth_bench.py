"""Cost of access control: policy decision time and authenticated throughput.

``python -m bench.auth_bench [--quick] [--decisions-only]`` (also run by
``python -m bench``) prints:

1. In-process, with :mod:`timeit`: the median time of one policy decision
   evaluated by CEL (``AccessControl.evaluate``) for an authenticated
   identity under a five-rule policy (three global rules, two repository
   rules, the decision walking both policies), of the same decision answered
   from the memo (``is_allowed``, the path a repeated request takes), and of
   a cached basic-auth verification. Target: an evaluated decision well under
   50 µs at the median.
   Then the OIDC path (:mod:`angos.auth.oidc`) against a local HTTPS issuer
   (tests/auth/oidc_issuer.py): the first token ever (discovery and key
   set fetched), a token never seen before with the keys held (cold: the
   RS256 signature check and claim checks), and a remembered token as a
   Basic password and as a Bearer value (the path every later request with
   it takes). Target: remembered ≤ 50 µs at the median, like basic auth.
2. Over HTTP with ``wrk`` (skipped when ``wrk`` is not installed): manifest
   GET requests/s against an anonymous allow-all server and against a server
   with basic auth and the same five-rule policy (same worker count, same
   data), both up at once and measured in short interleaved runs so that
   background load hits both alike; medians are reported and the ratio
   should be at least 0.90.

3. Under a wrong-password flood (``--flood``, skipped by ``--decisions-only``;
   needs ``wrk``): one server (2 workers) behind ``trusted_proxies =
   ["127.0.0.1/32"]``, so ``X-Forwarded-For`` stands for 200 client
   addresses. ``wrk`` keeps 200 connections sending wrong passwords, each
   request from one of the 200 addresses at random; meanwhile a cached
   identity logs in every 100 ms and fresh identities (never verified
   before, so argon2 must run) log in one after another, each from its own
   address. Reported: the cached identity's latency (median, p99, max) and
   every uncached login's status and latency, against the same measured with
   no flood, plus the flood's own throughput and how it was answered.

Self-contained: it starts its own servers on free ports in temporary
directories and stops them (process group) on exit or Ctrl-C. Only
127.0.0.1 is contacted; the flood's addresses exist only in headers.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import timeit
from pathlib import Path

import requests

RULES_GLOBAL = [
    "request.action == 'healthz'",
    "identity.id == 'ci' && request.action in ['put-manifest', 'delete-manifest']",
    "identity.id != null && identity.client_ip != null",
]
RULES_REPO = [
    "identity.id == 'bench' && request.action in ['put-manifest', 'delete-manifest', 'start-upload']",
    "request.action == 'get-manifest' || request.action == 'get-blob'",
]
USER, PASSWORD = "bench", "bench-password"


def _toml_list(rules) -> str:
    return "[" + ", ".join(json.dumps(r) for r in rules) + "]"


def config_text(root: Path, port: int, workers: int, secured: bool, password_hash: str | None) -> str:
    text = (f'[server]\nbind_address = "127.0.0.1"\nport = {port}\nworkers = {workers}\n\n'
            f'[blob_store.fs]\nroot_dir = "{root}"\n\n')
    if not secured:
        return text + '[global.access_policy]\ndefault = "allow"\n'
    return text + (f'[auth.identity.bench]\nusername = "{USER}"\npassword = "{password_hash}"\n\n'
                   f'[global.access_policy]\ndefault = "deny"\nrules = {_toml_list(RULES_GLOBAL)}\n\n'
                   f'[repository."bench".access_policy]\ndefault = "deny"\nrules = {_toml_list(RULES_REPO)}\n')


# ---------------------------------------------------------------- in-process


def decision_bench(quick: bool) -> dict:
    from angos.auth import AccessControl, Identity
    from angos.auth.basic import hash_password
    from angos.config import load_config_text

    with tempfile.TemporaryDirectory() as tmp:
        hashed = hash_password(PASSWORD)
        ac = AccessControl(load_config_text(config_text(Path(tmp), 8000, 1, True, hashed)))
        ident = Identity(id="bench", username=USER, client_ip="127.0.0.1")
        fields = {"action": "get-manifest", "namespace": "bench/app", "reference": "latest"}
        assert ac.is_allowed(ident, "get-manifest", fields)
        header = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        ac.authenticate(header, "127.0.0.1")  # warm the verification cache
        number, repeat = (200, 50) if quick else (1000, 200)
        decide = timeit.repeat(lambda: ac.evaluate(ident, "get-manifest", fields), number=number, repeat=repeat)
        memo = timeit.repeat(lambda: ac.is_allowed(ident, "get-manifest", fields), number=number, repeat=repeat)
        auth = timeit.repeat(lambda: ac.authenticate(header, "127.0.0.1"), number=number, repeat=repeat)
    return {"decision_us": statistics.median(decide) / number * 1e6,
            "memoised_decision_us": statistics.median(memo) / number * 1e6,
            "cached_basic_auth_us": statistics.median(auth) / number * 1e6}


def oidc_bench(quick: bool) -> dict:
    from angos.auth import AccessControl
    from angos.config import load_config_text
    from tests.auth.conftest import make_pki
    from tests.auth.oidc_issuer import IssuerServer

    with tempfile.TemporaryDirectory() as tmp:
        pki = make_pki(Path(tmp) / "pki")
        issuers = IssuerServer(pki)
        try:
            issuer = issuers.issuer("bench")
            ac = AccessControl(load_config_text(
                config_text(Path(tmp), 8000, 1, False, None)
                + f'[auth.oidc.bench]\nissuer = "{issuer.url}"\nrequired_audience = "angos-test"\n'
                  f'server_ca_bundle = "{pki.ca}"\n'))
            n, (number, repeat) = (200, (200, 50)) if quick else (1000, (1000, 200))
            tokens = [issuer.token(repository=f"myorg/app-{i}") for i in range(n + 1)]  # minted before timing
            headers = [_basic("bench", t) for t in tokens]
            t = time.perf_counter()
            ac.authenticate(headers[n], "127.0.0.1")
            first = time.perf_counter() - t
            cold = []
            for header in headers[:n]:
                t = time.perf_counter()
                ac.authenticate(header, "127.0.0.1")
                cold.append(time.perf_counter() - t)
            bearer = f"Bearer {tokens[0]}"
            basic = timeit.repeat(lambda: ac.authenticate(headers[0], "127.0.0.1"), number=number, repeat=repeat)
            bear = timeit.repeat(lambda: ac.authenticate(bearer, "127.0.0.1"), number=number, repeat=repeat)
            fetches = issuer.jwks_fetches
        finally:
            issuers.stop()
    return {"first_ms": first * 1000, "cold_us": statistics.median(cold) * 1e6,
            "cold_p99_us": sorted(cold)[int(0.99 * (len(cold) - 1))] * 1e6,
            "cached_basic_us": statistics.median(basic) / number * 1e6,
            "cached_bearer_us": statistics.median(bear) / number * 1e6, "jwks_fetches": fetches}


def _print_oidc(o: dict) -> None:
    print(f"- OIDC token, the first one (discovery and key set fetched over HTTPS): {o['first_ms']:.1f} ms")
    print(f"- OIDC token never seen before, keys held (RS256), median: {o['cold_us']:.0f} µs "
          f"(p99 {o['cold_p99_us']:.0f} µs)")
    print(f"- OIDC token remembered, as a Basic password, median: {o['cached_basic_us']:.1f} µs "
          f"(target <= 50 µs: {'ok' if o['cached_basic_us'] <= 50 else 'MISSED'})")
    print(f"- OIDC token remembered, as a Bearer value, median: {o['cached_bearer_us']:.1f} µs "
          f"(target <= 50 µs: {'ok' if o['cached_bearer_us'] <= 50 else 'MISSED'}; "
          f"key set fetched {o['jwks_fetches']} time(s) in all)")


# ---------------------------------------------------------------- over HTTP


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, secured: bool, workers: int, password_hash: str, config=None):
        self.dir = Path(tempfile.mkdtemp(prefix="angos-auth-bench-"))
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cfg = self.dir / "config.toml"
        cfg.write_text(config(self.dir / "data", self.port) if config is not None
                       else config_text(self.dir / "data", self.port, workers, secured, password_hash))
        self.log = open(self.dir / "server.log", "ab")
        env = dict(os.environ, ANGOS_LOG="warn")
        self.proc = subprocess.Popen([sys.executable, "-m", "angos.cli", "-c", str(cfg), "server"], cwd=self.dir,
                                     stdout=self.log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            self._wait_ready()
        except BaseException:
            # Not yet in the caller's list of servers to stop (an interrupt, a failed start).
            self.stop()
            raise

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 30
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {(self.dir / 'server.log').read_text()[-2000:]}")
            try:
                requests.get(self.url + "/healthz", timeout=1)
                break
            except requests.RequestException:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def _push_manifest(url: str, auth) -> str:
    s = requests.Session()
    s.auth = auth
    blobs = []
    for data in (json.dumps({"architecture": "amd64", "os": "linux"}).encode(), os.urandom(1024)):
        import hashlib

        d = "sha256:" + hashlib.sha256(data).hexdigest()
        r = s.post(f"{url}/v2/bench/app/blobs/uploads/", params={"digest": d}, data=data)
        r.raise_for_status()
        blobs.append((d, len(data)))
    body = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                       "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                  "digest": blobs[0][0], "size": blobs[0][1]},
                       "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                                   "digest": blobs[1][0], "size": blobs[1][1]}]})
    r = s.put(f"{url}/v2/bench/app/manifests/latest", data=body,
              headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"})
    r.raise_for_status()
    return "/v2/bench/app/manifests/latest"


def _wrk(url: str, seconds: int, header: str | None) -> float:
    cmd = ["wrk", "-t2", "-c32", f"-d{seconds}s", "--latency"]
    if header:
        cmd += ["-H", f"Authorization: {header}"]
    out = subprocess.run(cmd + [url], capture_output=True, text=True, check=True).stdout
    non2xx = [ln for ln in out.splitlines() if "Non-2xx" in ln]
    if non2xx:
        raise RuntimeError(f"wrk saw errors: {non2xx[0].strip()}")
    line = next(ln for ln in out.splitlines() if ln.startswith("Requests/sec:"))
    return float(line.split()[1])


def http_bench(quick: bool) -> dict | None:
    if shutil.which("wrk") is None:
        print("auth bench: wrk is not installed; skipping the HTTP comparison", file=sys.stderr)
        return None
    from angos.auth.basic import hash_password

    hashed = hash_password(PASSWORD)
    header = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    rounds, seconds, workers = (2, 2, 1) if quick else (7, 3, 2)
    results: dict[str, list[float]] = {"anonymous": [], "authenticated": []}
    servers: dict[str, Server] = {}
    try:
        # Both servers stay up and short runs interleave, so load from anything
        # else on the machine lands on both figures alike.
        targets = {}
        for kind in ("anonymous", "authenticated"):
            servers[kind] = Server(kind == "authenticated", workers, hashed)
            auth = (USER, PASSWORD) if kind == "authenticated" else None
            targets[kind] = (servers[kind].url + _push_manifest(servers[kind].url, auth), header if auth else None)
            _wrk(*targets[kind][:1], 1, targets[kind][1])  # warm-up: verification cache, connections
        for _ in range(rounds):
            for kind, (url, hdr) in targets.items():
                results[kind].append(_wrk(url, seconds, hdr))
    finally:
        for server in servers.values():
            server.stop()
    anon = statistics.median(results["anonymous"])
    authd = statistics.median(results["authenticated"])
    return {"anonymous_rps": anon, "authenticated_rps": authd, "ratio": authd / anon}


# ---------------------------------------------------------------- wrong-password flood

FLOOD_CLIENTS = 200
FRESH_USERS = 40  # more than any run logs in, so every measured login is a first (uncached) one


def flood_config_text(root: Path, port: int, password_hash: str) -> str:
    text = (f'[server]\nbind_address = "127.0.0.1"\nport = {port}\nworkers = 2\n\n'
            f'[blob_store.fs]\nroot_dir = "{root}"\n\n'
            # X-Forwarded-For from loopback is believed: the flood's addresses are header values only.
            '[global]\ntrusted_proxies = ["127.0.0.1/32"]\n\n'
            '[global.access_policy]\ndefault = "deny"\nrules = ["identity.id != null"]\n\n')
    users = [USER] + [f"fresh{i}" for i in range(FRESH_USERS)]
    return text + "".join(f'[auth.identity.{u}]\nusername = "{u}"\npassword = "{password_hash}"\n\n' for u in users)


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def _wrk_flood_script(path: Path) -> None:
    """Every request a different wrong password for a real user, from one of FLOOD_CLIENTS addresses."""
    headers = ",\n".join(f'"{_basic(USER, f"wrong-{i}")}"' for i in range(2000))
    path.write_text(f"""
local auth = {{{headers}}}
math.randomseed(os.time())
request = function()
  wrk.headers["Authorization"] = auth[math.random(#auth)]
  wrk.headers["X-Forwarded-For"] = "203.0.113." .. math.random({FLOOD_CLIENTS})
  return wrk.format("GET", "/v2/")
end
local statuses = {{}}
response = function(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end
done = function(summary, latency, requests)
  io.write(string.format("requests %d errors %d\\n", summary.requests,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
""")


def _timed_get(url: str, header: str, source: str, timeout: float) -> tuple[int | str, float]:
    t = time.monotonic()
    try:
        r = requests.get(url, headers={"Authorization": header, "X-Forwarded-For": source, "Connection": "close"},
                         timeout=timeout)
        status: int | str = r.status_code
    except requests.RequestException as exc:
        status = type(exc).__name__
    return status, time.monotonic() - t


def _measure(url: str, seconds: float, fresh: list[str], stop_fresh_at: float | None = None) -> dict:
    """Cached logins every 100 ms and uncached ones back to back, for ``seconds``."""
    import threading

    cached: list[tuple[int | str, float]] = []
    uncached: list[tuple[int | str, float]] = []
    end = time.monotonic() + seconds

    def cached_loop():
        while time.monotonic() < end:
            cached.append(_timed_get(url, _basic(USER, PASSWORD), "192.0.2.10", 60))
            time.sleep(0.1)

    def uncached_loop():
        for i, user in enumerate(fresh):
            if time.monotonic() >= (stop_fresh_at or end):
                break
            uncached.append(_timed_get(url, _basic(user, PASSWORD), f"192.0.2.{20 + i}", 90))
            time.sleep(0.5)

    threads = [threading.Thread(target=cached_loop), threading.Thread(target=uncached_loop)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {"cached": cached, "uncached": uncached}


def _summary(samples: list[tuple[int | str, float]]) -> dict:
    lat = sorted(d for _, d in samples)
    statuses: dict[str, int] = {}
    for st, _ in samples:
        statuses[str(st)] = statuses.get(str(st), 0) + 1
    if not lat:
        return {"n": 0, "statuses": statuses}
    return {"n": len(lat), "p50_ms": statistics.median(lat) * 1000, "p99_ms": lat[int(0.99 * (len(lat) - 1))] * 1000,
            "max_ms": lat[-1] * 1000, "statuses": statuses}


def flood_bench(quick: bool) -> dict | None:
    if shutil.which("wrk") is None:
        print("auth bench: wrk is not installed; skipping the wrong-password flood", file=sys.stderr)
        return None
    import threading

    from angos.auth.basic import hash_password

    seconds = 12 if quick else 30
    hashed = hash_password(PASSWORD)
    server = Server(False, 2, hashed, config=lambda root, port: flood_config_text(root, port, hashed))
    try:
        url = server.url + "/v2/"
        fresh = [f"fresh{i}" for i in range(FRESH_USERS)]
        assert _timed_get(url, _basic(USER, PASSWORD), "192.0.2.10", 60)[0] == 200  # now cached in one worker
        for _ in range(4):  # and, almost surely, in the other one too (fresh connections spread over both)
            _timed_get(url, _basic(USER, PASSWORD), "192.0.2.10", 60)
        quiet = _measure(url, 3, fresh[:3])
        script = server.dir / "flood.lua"
        _wrk_flood_script(script)
        out: dict = {}

        def flood():
            out["wrk"] = subprocess.run(["wrk", "-t2", f"-c{FLOOD_CLIENTS}", f"-d{seconds}s", "--timeout", "60s",
                                         "-s", str(script), url], capture_output=True, text=True).stdout

        flooder = threading.Thread(target=flood)
        flooder.start()
        time.sleep(2)  # let the flood fill the queues first
        loud = _measure(url, seconds - 3, fresh[3:], stop_fresh_at=time.monotonic() + seconds - 4)
        flooder.join()
        wrk_out = out.get("wrk", "")
        rps = next((float(ln.split()[1]) for ln in wrk_out.splitlines() if ln.startswith("Requests/sec:")), 0.0)
        non2xx = next((ln.split(":")[1].strip() for ln in wrk_out.splitlines() if "Non-2xx" in ln), "0")
        log = (server.dir / "server.log").read_text(errors="replace")
    finally:
        server.stop()
    return {"seconds": seconds, "quiet_cached": _summary(quiet["cached"]), "quiet_uncached": _summary(quiet["uncached"]),
            "cached": _summary(loud["cached"]), "uncached": _summary(loud["uncached"]),
            "uncached_each": [(st, round(d * 1000)) for st, d in loud["uncached"]],
            "flood_rps": rps, "flood_non2xx": non2xx, "throttled_logged": log.count("TOOMANYREQUESTS")}


def _print_flood(f: dict) -> None:
    def line(name, s):
        if not s["n"]:
            return f"- {name}: no sample ({s['statuses']})"
        return (f"- {name}: median {s['p50_ms']:.0f} ms, p99 {s['p99_ms']:.0f} ms, max {s['max_ms']:.0f} ms "
                f"over {s['n']} logins, statuses {s['statuses']}")

    print()
    print(f"### Wrong-password flood ({FLOOD_CLIENTS} connections from {FLOOD_CLIENTS} addresses, {f['seconds']} s)")
    print()
    print(line("cached identity, no flood", f["quiet_cached"]))
    print(line("uncached identity, no flood", f["quiet_uncached"]))
    print(line("cached identity during the flood", f["cached"]))
    print(line("uncached identity during the flood", f["uncached"]))
    print(f"- each uncached login during the flood (status, ms): {f['uncached_each']}")
    print(f"- the flood: {f['flood_rps']:.0f} req/s, non-2xx answers: {f['flood_non2xx']}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.auth_bench", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer samples and short HTTP runs")
    p.add_argument("--decisions-only", action="store_true", help="skip the HTTP comparison and the flood")
    p.add_argument("--flood-only", action="store_true", help="only the wrong-password flood")
    args = p.parse_args(argv)
    if args.flood_only:
        f = flood_bench(args.quick)
        if f is not None:
            _print_flood(f)
        return 0
    d = decision_bench(args.quick)
    print("## Access control")
    print()
    print(f"- policy decision, five rules (global + repository), median: {d['decision_us']:.1f} µs "
          f"(target < 50 µs: {'ok' if d['decision_us'] < 50 else 'MISSED'})")
    print(f"- the same decision answered from the memo, median: {d['memoised_decision_us']:.1f} µs")
    print(f"- cached basic-auth verification, median: {d['cached_basic_auth_us']:.1f} µs")
    _print_oidc(oidc_bench(args.quick))
    if not args.decisions_only:
        h = http_bench(args.quick)
        if h is not None:
            print(f"- manifest GET, anonymous allow-all: {h['anonymous_rps']:.0f} req/s")
            print(f"- manifest GET, basic auth + five-rule policy: {h['authenticated_rps']:.0f} req/s")
            print(f"- ratio: {h['ratio']:.2f} (target >= 0.90: {'ok' if h['ratio'] >= 0.9 else 'MISSED'})")
        f = flood_bench(args.quick)
        if f is not None:
            _print_flood(f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
