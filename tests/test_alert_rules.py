"""README ("Monitoring"): the alert rules it shows (docs/prometheus-alerts.yml, verbatim) fire in
the state each one describes, and none fires in a healthy state; /metrics passes ``promtool
check metrics``.

Each test brings real servers into a state, scrapes the source's /metrics one or more times,
and turns the samples into ``promtool test rules`` input: each scrape is held for some
minutes of the test's clock (the state persists that long), one sample a minute. Values of
``*_timestamp_seconds`` metrics are moved onto that clock (a value ``v`` scraped at real time
``T`` and shown from test time ``t`` reads ``v - T + t``; 0, "never", stays 0), so
``time() - x`` means the same in the test as it did on the server. promtool then evaluates
the rules file and compares the alerts firing at the end with the ones the test expects.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from angos.config import load_config
from angos.queue.core import JobQueue
from angos.queue.envelope import Envelope
from angos.replication.jobs import SyncJob

from .conftest import ROOT, chattr, free_port, wait_for
from .replication.conftest import remote_digest, source_config
from .replication.test_metrics import FAST, metric, scrape, small_push

RULES = ROOT / "docs" / "prometheus-alerts.yml"
ALERTS = re.findall(r"- alert: (\w+)", RULES.read_text())
SUMMARIES = dict(re.findall(r'- alert: (\w+)\n(?:.*\n)*?\s+summary: "(.*)"', RULES.read_text()))
USED = set(re.findall(r"\b((?:angos|http)_[a-z_]+)", RULES.read_text()))


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool is not installed (make test installs it: Debian package prometheus)")
    return path


@dataclass
class Scrape:
    at: float
    samples: dict


def take(server) -> Scrape:
    at = time.time()
    return Scrape(at, {k: v for k, v in scrape(server).items() if k[0] in USED})


def input_series(scrapes: list[Scrape], minutes: list[int]) -> list[dict]:
    """promtool input series: scrape i held for minutes[i] one-minute samples (see the module docstring)."""
    keys = sorted({k for s in scrapes for k in s.samples})
    out = []
    for name, labels in keys:
        values, t = [], 0
        for s, hold in zip(scrapes, minutes):
            v = s.samples.get((name, labels))
            if v is not None and name.endswith("_timestamp_seconds") and v > 0:
                v = v - s.at + t * 60
            values += ["_" if v is None else repr(v)] * hold
            t += hold
        selector = name + "{" + ",".join(f'{k}="{v}"' for k, v in labels) + "}"
        out.append({"series": selector, "values": " ".join(values)})
    return out


def summary(alert: str, labels: dict) -> str:
    """The alert's summary annotation as Prometheus renders it for ``labels`` (they use only $labels)."""
    return re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda mt: labels[mt.group(1)], SUMMARIES[alert])


def evaluate(tmp_path: Path, scrapes: list[Scrape], minutes: list[int], expected: dict[str, list[dict]]):
    """Run the rules over the scrapes; ``expected`` maps alert names to the label sets firing at the end
    (a name mapped to [] must not fire)."""
    end = f"{sum(minutes) - 1}m"
    test = {"rule_files": [str(RULES)], "evaluation_interval": "1m",
            "tests": [{"interval": "1m", "input_series": input_series(scrapes, minutes),
                       "alert_rule_test": [{"eval_time": end, "alertname": name,
                                            "exp_alerts": [{"exp_labels": labels,
                                                            "exp_annotations": {"summary": summary(name, labels)}}
                                                           for labels in firing]}
                                           for name, firing in expected.items()]}]}
    path = tmp_path / "alert-test.json"  # JSON is YAML: promtool reads it as its test file
    path.write_text(json.dumps(test, indent=1))
    res = subprocess.run([promtool(), "test", "rules", str(path)], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr + "\n" + path.read_text()[:4000]


def test_readme_shows_the_alert_rules_verbatim():
    readme = (ROOT / "README.md").read_text()
    assert "```yaml\n" + RULES.read_text() + "```\n" in readme
    res = subprocess.run([promtool(), "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and f"SUCCESS: {len(ALERTS)} rules found" in res.stdout, res.stdout + res.stderr


def _replicate(server) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "angos.cli", "-c", str(server.config_path), "replicate"],
                          cwd=server.workdir, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)))


def test_a_healthy_registry_fires_no_alert_and_its_metrics_pass_promtool_check(angos_factory, tmp_path):
    peer = angos_factory()
    source = angos_factory(config_text=source_config({"name": "peer", "url": peer.url}, extra=FAST))
    d = small_push(source, "nginx/app", "v1")
    assert wait_for(lambda: remote_digest(peer, "nginx/app", "v1") == d, what="the push to replicate")
    assert _replicate(source).returncode == 0
    assert wait_for(lambda: metric(source, "angos_replication_reconcile_last_success_timestamp_seconds"),
                    what="the clean reconcile run on /metrics")
    assert wait_for(lambda: metric(source, "angos_replication_backlog", downstream="peer") == 0.0
                    and metric(source, "angos_replication_downstream_up", downstream="peer") == 1.0)
    text = requests.get(source.url + "/metrics", timeout=10).text
    check = subprocess.run([promtool(), "check", "metrics"], input=text, capture_output=True, text=True, timeout=60)
    assert check.returncode == 0 and not (check.stdout + check.stderr).strip(), check.stdout + check.stderr
    first = take(source)
    second = take(source)
    evaluate(tmp_path, [first, second], [60, 30], {name: [] for name in ALERTS})


def test_a_downstream_never_up_fires_stale_down_and_backlog_growing(angos_factory, tmp_path):
    down = f"http://127.0.0.1:{free_port()}"
    source = angos_factory(config_text=source_config({"name": "down", "url": down}, extra=FAST))
    assert wait_for(lambda: metric(source, "angos_replication_downstream_up", downstream="down") == 0.0)
    scrapes = []
    for n in (1, 2, 3):  # one more change waits each half hour
        small_push(source, "nginx/app", f"t{n}")
        assert wait_for(lambda n=n: metric(source, "angos_replication_backlog", downstream="down") == n)
        scrapes.append(take(source))
    firing = [{"downstream": "down"}]
    evaluate(tmp_path, scrapes, [30, 30, 30], {"AngosReplicationStale": firing,
                                               "AngosReplicationDownstreamDown": firing,
                                               "AngosReplicationBacklogGrowing": firing,
                                               "AngosReplicationDeadLetters": []})


def test_a_change_waiting_over_an_hour_fires(angos_factory, tmp_path):
    down = f"http://127.0.0.1:{free_port()}"
    source = angos_factory(config_text=source_config({"name": "down", "url": down}, extra=FAST))
    assert wait_for(lambda: metric(source, "angos_replication_downstream_up", downstream="down") == 0.0)
    # A change queued two hours ago (before a restart, say) that still waits for the downstream.
    q = JobQueue(load_config([str(source.config_path)]), "replication")
    try:
        job = SyncJob("nginx", "down", "nginx/app", "old")
        env = Envelope.new(job.kind, job.lock_key, job.payload(), 5)
        q.store.add(env.with_(created_at=env.created_at - 7200), q._wake_msg())
    finally:
        q.close()
    assert wait_for(lambda: metric(source, "angos_replication_oldest_pending_seconds", downstream="down") > 7200)
    evaluate(tmp_path, [take(source)], [15], {"AngosReplicationChangeWaitingTooLong": [{"downstream": "down"}]})


def test_reconcile_failing_twice_in_a_row_fires(angos_factory, tmp_path):
    down = f"http://127.0.0.1:{free_port()}"
    source = angos_factory(config_text=source_config({"name": "down", "url": down, "mode": "reconcile-only"},
                                                     extra=FAST))
    small_push(source, "nginx/app", "v1")
    assert _replicate(source).returncode == 1
    assert wait_for(lambda: metric(source, "angos_replication_reconcile_consecutive_failures") == 1.0)
    once = take(source)
    evaluate(tmp_path, [once], [10], {"AngosReconcileFailing": []})  # one failed run is not "keeps failing"
    assert _replicate(source).returncode == 1
    assert wait_for(lambda: metric(source, "angos_replication_reconcile_consecutive_failures") == 2.0)
    evaluate(tmp_path, [once, take(source)], [10, 10], {"AngosReconcileFailing": [{}]})


def test_enqueue_failures_fire(angos_factory, tmp_path):
    peer = angos_factory()
    source = angos_factory(config_text=source_config({"name": "peer", "url": peer.url}, extra=FAST))
    small_push(source, "nginx/app", "v0")  # the queue database exists
    before = take(source)
    db = source.workdir / "data" / "_jobs" / "pending" / "replication" / "queue.db"
    frozen = [p for p in (db, db.with_name("queue.db-wal"), db.with_name("queue.db-shm"), db.parent) if p.exists()]
    chattr("+i", *frozen)  # (see tests/queue/test_enqueue_failures.py)
    try:
        for i in range(2):
            small_push(source, "nginx/app", f"v{i + 1}")  # 201 all the same
        after = take(source)
    finally:
        chattr("-i", *frozen)
    assert after.samples[("angos_job_queue_enqueue_failures_total", (("queue", "replication"),))] == 2.0
    evaluate(tmp_path, [before, after], [10, 3], {"AngosEnqueueFailures": [{"queue": "replication"}]})


def test_dead_letters_fire(angos_factory, tmp_path):
    peer = angos_factory(extra="[global]\nimmutable_tags = true\n")
    source = angos_factory(config_text=source_config({"name": "peer", "url": peer.url},
                                                     extra=FAST + "max_attempts = 1\n"))
    small_push(peer, "nginx/app", "v1")
    small_push(source, "nginx/app", "v1")  # the downstream refuses it (immutable tag): a rejection
    assert wait_for(lambda: metric(source, "angos_replication_dead_letters", downstream="peer") == 1.0)
    evaluate(tmp_path, [take(source)], [5], {"AngosReplicationDeadLetters": [{"downstream": "peer"}]})


def test_server_errors_fire(angos_factory, tmp_path):
    server = angos_factory()
    (server.workdir / "data").rename(server.workdir / "data.gone")
    (server.workdir / "data").write_text("not a directory")  # the storage breaks: writes fail
    assert requests.post(server.v2("broken/app/blobs/uploads/"), timeout=10).status_code >= 500
    before = take(server)
    for _ in range(3):
        assert requests.post(server.v2("broken/app/blobs/uploads/"), timeout=10).status_code >= 500
    evaluate(tmp_path, [before, take(server)], [10, 3], {"AngosServerErrors": [{"route": "start-upload"}]})
