"""The systemd units and the packaged default configuration, checked in place.

Nothing is installed here (test_deb.py installs the real package):

- every unit passes ``systemd-analyze verify``; the package is not installed,
  so the copies verified here point ``/usr/bin/angos`` and the worker's
  condition helper at ``/bin/true`` (verify insists that executables exist);
  test_deb.py verifies the installed units unchanged;
- the sandbox and lifecycle settings SPEC 13 asks for are present, and the
  stop timeouts exceed the drain defaults of ``angos.config``, so systemd's
  SIGKILL never cuts a graceful stop short;
- ``packaging/deb/config.toml`` (the shipped /etc/angos/config.toml) loads,
  keeps everything under /var/lib/angos, and its access policy lets local
  clients and logged-in identities in while refusing remote anonymous ones;
- the worker's ExecCondition helper runs the worker only with
  ``[global.job_queue]`` (or when the config is broken, so the worker itself
  reports the error).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from angos.auth import AccessControl
from angos.auth.identity import Identity
from angos.config import JobQueueConfig, ServerConfig, load_config

from ..sandbox import unit_settings

ROOT = Path(__file__).resolve().parents[2]
UNITS = sorted((ROOT / "systemd").glob("angos-*"))
SERVICES = [u for u in UNITS if u.suffix == ".service"]
DEFAULT_CONFIG = ROOT / "packaging" / "deb" / "config.toml"
HELPER = ROOT / "packaging" / "deb" / "job-queue-configured"
REPLACED = ("/usr/bin/angos", "/usr/libexec/angos/job-queue-configured")


def seconds(value: str) -> int:
    units = {"s": 1, "min": 60, "h": 3600}
    for suffix, factor in units.items():
        if value.endswith(suffix) and value[: -len(suffix)].isdigit():
            return int(value[: -len(suffix)]) * factor
    return int(value)


def test_every_unit_is_shipped():
    assert [u.name for u in UNITS] == ["angos-replicate.service", "angos-replicate.timer",
                                       "angos-server.service", "angos-worker.service"]


def test_systemd_analyze_verify_accepts_every_unit(tmp_path):
    if shutil.which("systemd-analyze") is None:
        pytest.fail("systemd-analyze is not installed (make test installs the systemd package)")
    for unit in UNITS:
        text = unit.read_text()
        for path in REPLACED:
            text = text.replace(path, "/bin/true")
        (tmp_path / unit.name).write_text(text)
    res = subprocess.run(["systemd-analyze", "verify", *[f"./{u.name}" for u in UNITS]], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    # verify reports some problems (unknown keys, bad values) as warnings only.
    assert "angos-" not in res.stderr, res.stderr


@pytest.mark.parametrize("unit", SERVICES, ids=lambda u: u.name)
def test_service_runs_sandboxed_as_angos_with_state_under_var_lib(unit):
    s = unit_settings(unit)
    want = {
        "Service.User": ["angos"], "Service.Group": ["angos"],
        "Service.StateDirectory": ["angos"], "Service.ConfigurationDirectory": ["angos"],
        "Service.NoNewPrivileges": ["yes"], "Service.ProtectSystem": ["strict"],
        "Service.ProtectHome": ["yes"], "Service.PrivateTmp": ["yes"],
        "Service.ReadWritePaths": ["/var/lib/angos"], "Service.Restart": ["on-failure"],
        "Service.StandardOutput": ["journal"], "Service.StandardError": ["journal"],
    }
    assert {k: s.get(k) for k in want} == want
    (exec_start,) = s["Service.ExecStart"]
    assert exec_start.startswith("/usr/bin/angos -c /etc/angos/config.toml ")


def test_server_unit_stops_gracefully_within_its_timeout():
    s = unit_settings(ROOT / "systemd" / "angos-server.service")
    assert s["Service.ExecStart"] == ["/usr/bin/angos -c /etc/angos/config.toml server"]
    assert s["Service.Type"] == ["notify"]
    assert s["Service.KillSignal"] == ["SIGTERM"]
    # Only the gunicorn master gets SIGTERM; it stops its own workers.
    assert s["Service.KillMode"] == ["mixed"]
    drain = ServerConfig.__dataclass_fields__["shutdown_drain_secs"].default
    assert seconds(s["Service.TimeoutStopSec"][0]) > drain
    assert s["Install.WantedBy"] == ["multi-user.target"]


def test_worker_unit_lets_running_jobs_finish_and_needs_a_job_queue():
    s = unit_settings(ROOT / "systemd" / "angos-worker.service")
    assert s["Service.ExecStart"] == ["/usr/bin/angos -c /etc/angos/config.toml worker"]
    assert s["Service.Type"] == ["notify"]
    assert s["Service.KillSignal"] == ["SIGTERM"]
    drain = JobQueueConfig.__dataclass_fields__["drain_timeout_secs"].default
    assert seconds(s["Service.TimeoutStopSec"][0]) > drain
    assert s["Service.ExecCondition"] == ["/usr/libexec/angos/job-queue-configured /etc/angos/config.toml"]
    assert "[global.job_queue]" in (ROOT / "systemd" / "angos-worker.service").read_text()


def test_replicate_timer_runs_scrub_replicate_nightly_and_catches_up():
    svc = unit_settings(ROOT / "systemd" / "angos-replicate.service")
    assert svc["Service.Type"] == ["oneshot"]
    assert svc["Service.ExecStart"] == ["/usr/bin/angos -c /etc/angos/config.toml scrub --replicate"]
    assert "Install.WantedBy" not in svc  # started by the timer only
    timer = unit_settings(ROOT / "systemd" / "angos-replicate.timer")
    assert timer["Timer.Persistent"] == ["true"]
    assert timer["Timer.OnCalendar"] == ["*-*-* 03:00:00"]
    assert seconds(timer["Timer.RandomizedDelaySec"][0]) > 0
    assert timer["Install.WantedBy"] == ["timers.target"]


def test_default_config_is_a_loopback_registry_storing_under_var_lib():
    cfg = load_config([str(DEFAULT_CONFIG)])
    assert (cfg.server.bind_address, cfg.server.port) == ("127.0.0.1", 8000)
    assert cfg.blob_store.fs.root_dir == "/var/lib/angos"
    assert cfg.global_.job_queue is None  # the server drains the queue itself
    assert cfg.global_.access_policy.default == "deny"


@pytest.mark.parametrize("client_ip, user, allowed", [
    ("127.0.0.1", None, True),
    ("::1", None, True),
    ("192.0.2.7", None, False),
    (None, None, False),
    ("192.0.2.7", "alice", True),
])
def test_default_policy_admits_local_clients_and_identities_only(client_ip, user, allowed):
    access = AccessControl(load_config([str(DEFAULT_CONFIG)]))
    identity = Identity(id=user, username=user, client_ip=client_ip)
    for action in ("put-manifest", "get-manifest"):
        fields = {"action": action, "namespace": "team/app", "reference": "v1"}
        assert access.evaluate(identity, action, fields) is allowed


@pytest.mark.parametrize("extra, runs", [
    ("", False),
    ('[global.job_queue]\nbackend = "sqlite"\n', True),
    ("[server\nbroken", True),
])
def test_worker_condition_runs_the_worker_only_with_a_job_queue(tmp_path, extra, runs):
    override = tmp_path / "override.toml"
    override.write_text(extra)
    res = subprocess.run([sys.executable, str(HELPER), str(DEFAULT_CONFIG), str(override)],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == (0 if runs else 1), res.stdout + res.stderr
