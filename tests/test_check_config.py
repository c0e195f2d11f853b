"""``angos check-config``: start-up's validation without starting anything.

- every configuration error ``angos server`` reports (tests/test_config.py's cases, and the
  checks beyond the schema: CEL type checks, argon2 hashes, TLS files, URLs) is reported by
  ``check-config`` as the same single line, with exit code 1;
- a good configuration exits 0 with one summary line, and opens nothing: it passes while a
  server holds the port, and creates no data directory;
- ``--print`` shows the merged effective configuration as TOML that loads back into the same
  configuration (every TOML example of the docs is tried), with every secret redacted;
- the shipped units run it before start and reload, and it runs under the server unit's
  sandbox (read-only everything) as the unit would run it.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import tomllib

import pytest

from angos.config import build_config, load_config

from .auth.conftest import argon_hash
from .conftest import ROOT
from .sandbox import interpreter_binds, sandboxed, unit_settings
from .test_config import BASE, CASES, assert_one_line_error, run_angos, write
from .test_docs import BASE as DOC_BASE
from .test_docs import _blocks as _doc_blocks

UNIT_CMD = "/usr/bin/angos -c /etc/angos/config.toml"


@pytest.mark.parametrize("text,needles", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_every_start_up_config_error_is_the_same_one_line_from_check_config(tmp_path, text, needles):
    path = write(tmp_path, "bad.toml", text)
    server = assert_one_line_error(run_angos(["-c", str(path), "server"], tmp_path),
                                   *[n.replace("@FILE@", str(path)) for n in needles])
    checked = assert_one_line_error(run_angos(["-c", str(path), "check-config"], tmp_path))
    assert checked == server


DEEP_CASES = [
    ("cel-type-check", BASE.replace('default = "allow"', 'default = "deny"\nrules = [\'identity.username == 1\']'),
     ["global.access_policy.rules[0]", "never equal"]),
    ("cel-unknown-field", BASE + '[repository."team".access_policy]\nrules = [\'request.nope == "x"\']\n',
     ['repository.team.access_policy.rules[0]', "no field 'nope'"]),
    ("not-an-argon2-hash", BASE + '[auth.identity.ci]\nusername = "ci"\npassword = "plaintext"\n',
     ["auth.identity.ci", "argon2"]),
    ("missing-tls-files", BASE + '[server.tls]\nserver_certificate_bundle = "@DATA@/none.pem"\n'
     'server_private_key = "@DATA@/none.key"\n', ["server.tls", "cannot load"]),
    ("authorization-webhook-ca-missing", BASE + '[global]\nauthorization_webhook = "hook"\n\n[auth.webhook.hook]\n'
     'url = "https://127.0.0.1:9/authz"\nserver_ca_bundle = "@DATA@/none.pem"\n',
     ["auth.webhook.hook.server_ca_bundle", "cannot load"]),
    ("bad-downstream-url", BASE + '[[repository."team".downstream]]\nname = "peer"\nurl = "ftp://peer"\n',
     ["repository.team.downstream[0].url", "ftp://peer"]),
    ("metadata-root-without-fs-blobs", BASE.split("[blob_store.fs]")[0]
     + '[blob_store.s3]\nbucket = "b"\n[metadata_store.fs]\nlock_strategy = "file"\n',
     ["metadata_store.fs.root_dir", "required"]),
]


@pytest.mark.parametrize("text,needles", [c[1:] for c in DEEP_CASES], ids=[c[0] for c in DEEP_CASES])
def test_checks_beyond_the_schema_fail_check_config_and_start_up_alike(tmp_path, text, needles):
    path = write(tmp_path, "bad.toml", text)
    checked = assert_one_line_error(run_angos(["-c", str(path), "check-config"], tmp_path), *needles)
    assert assert_one_line_error(run_angos(["-c", str(path), "server"], tmp_path)) == checked


def test_a_good_configuration_exits_0_with_one_summary_line_and_starts_nothing(tmp_path, angos):
    # The port of a server that is running: checking binds nothing, and creates no data directory.
    path = tmp_path / "good.toml"
    path.write_text(BASE.replace("@PORT@", str(angos.port)).replace("@DATA@", str(tmp_path / "data")))
    res = run_angos(["-c", str(path), "check-config"], tmp_path)
    assert res.returncode == 0, res.stderr
    assert res.stderr == ""
    (line,) = res.stdout.splitlines()
    assert line == (f"angos: configuration ok ({path}): listen http://127.0.0.1:{angos.port} (1 worker), "
                    f"blobs fs:{tmp_path / 'data'}, metadata same as blobs (file locks), 0 repositories, "
                    f"0 downstreams, 0 upstreams, in-process drain")
    assert not (tmp_path / "data").exists()


SECRETS = {"hash": None, "downstream": "ds-Pa55word", "upstream": "up-Pa55word", "s3": "s3-Secret-Key",
           "redis": "redis-Pa55word"}


def _secret_config() -> str:
    SECRETS["hash"] = argon_hash("operator password")
    return f"""\
[server]
bind_address = "127.0.0.1"
port = 8000

[global]
trusted_proxies = ["10.0.0.0/8"]

[global.access_policy]
default = "deny"
rules = ['identity.username == "ci" && request.action != "delete-manifest"']

[blob_store.s3]
bucket = "blobs"
endpoint = "http://127.0.0.1:9"
access_key_id = "AKIAEXAMPLE"
secret_key = "{SECRETS['s3']}"

[metadata_store.s3]
bucket = "meta"
endpoint = "http://127.0.0.1:9"
access_key_id = "AKIAEXAMPLE"
secret_key = "{SECRETS['s3']}"

[metadata_store.s3.lock_strategy.redis]
url = "redis://angos:{SECRETS['redis']}@127.0.0.1:6379/0"

[auth.identity.ci]
username = "ci"
password = "{SECRETS['hash']}"

[repository."team/app"]
immutable_tags = true

[[repository."team/app".downstream]]
name = "peer"
url = "https://peer.example"
username = "replicator"
password = "{SECRETS['downstream']}"

[repository."hub"]
namespace = "docker.io"

[[repository."hub".upstream]]
url = "https://registry-1.docker.io"
username = "someone"
password = "{SECRETS['upstream']}"
"""


def test_print_shows_the_effective_configuration_with_every_secret_redacted(tmp_path):
    base = tmp_path / "base.toml"
    base.write_text(_secret_config())
    override = tmp_path / "override.toml"
    override.write_text("[server]\nport = 9000\n")
    res = run_angos(["-c", str(base), "-c", str(override), "check-config", "--print"], tmp_path)
    assert res.returncode == 0, res.stderr
    summary, printed = res.stdout.split("\n", 1)
    assert summary.startswith("angos: configuration ok") and "2 repositories, 1 downstream, 1 upstream" in summary
    for name, secret in SECRETS.items():
        assert secret not in res.stdout, f"the {name} secret is printed"
    doc = tomllib.loads(printed)
    assert doc["server"]["port"] == 9000  # merged
    assert doc["server"]["keepalive_secs"] == 75  # defaults filled in
    assert doc["auth"]["identity"]["ci"] == {"username": "ci", "password": "<redacted>"}
    assert doc["repository"]["team/app"]["downstream"][0]["password"] == "<redacted>"
    assert doc["repository"]["team/app"]["downstream"][0]["username"] == "replicator"
    assert doc["repository"]["hub"]["upstream"][0]["password"] == "<redacted>"
    assert doc["blob_store"]["s3"]["secret_key"] == "<redacted>"
    assert doc["metadata_store"]["s3"]["lock_strategy"]["redis"]["url"] == "redis://angos:<redacted>@127.0.0.1:6379/0"
    assert doc["global"]["access_policy"]["rules"] == ['identity.username == "ci" && request.action != "delete-manifest"']


def test_the_printed_configuration_without_redaction_loads_back_into_the_same_one(tmp_path):
    from angos.config_toml import to_toml

    base = tmp_path / "base.toml"
    base.write_text(_secret_config() + '\n[ui]\nenabled = true\nname = "Reg \\"one\\" \\u00e9"\n')
    cfg = load_config([str(base)])
    again = build_config(tomllib.loads(to_toml(cfg, redact=False)))
    assert again == dataclasses.replace(cfg, sources=())


def test_the_units_check_the_configuration_before_start_and_reload():
    for unit in ("angos-server.service", "angos-worker.service"):
        s = unit_settings(ROOT / "systemd" / unit)
        assert s["Service.ExecStartPre"] == [f"{UNIT_CMD} check-config"], unit
        # systemd runs ExecReload= lines in order and stops at the first failure: no HUP for a bad file.
        assert s["Service.ExecReload"] == [f"{UNIT_CMD} check-config", "/bin/kill -HUP $MAINPID"], unit


def test_check_config_runs_in_the_server_units_sandbox(tmp_path):
    good = write(tmp_path, "good.toml", BASE)
    bad = write(tmp_path, "bad.toml", BASE.replace("workers = 1", "workers = 0"))
    state = tmp_path / "state"
    state.mkdir()
    for path, code in ((good, 0), (bad, 1)):
        argv, env = sandboxed(ROOT / "systemd" / "angos-server.service",
                              [sys.executable, "-m", "angos.cli", "-c", str(path), "check-config"],
                              state_dir=state, ro_binds=[path, *interpreter_binds()], as_user=False)
        res = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=dict(env, PYTHONPATH=str(ROOT)))
        assert res.returncode == code, res.stdout + res.stderr
        assert "Traceback" not in res.stderr
    assert list(state.iterdir()) == []  # checking wrote nothing


def test_poll_interval_error_gives_examples_that_fit_the_option(tmp_path):
    path = write(tmp_path, "queue.toml", BASE + '[global.job_queue]\nbackend = "sqlite"\n')
    res = run_angos(["-c", str(path), "worker", "--poll-interval", "5x"], tmp_path)
    line = assert_one_line_error(res, "--poll-interval", "'5x'")
    assert "50ms" in line and "30m" not in line and "2d" not in line


@pytest.mark.parametrize("block", list(_doc_blocks()))
def test_every_documented_configuration_round_trips_through_the_printed_toml(block):
    """Whatever tables the docs show (webhooks, OIDC, upstreams, locks), --print writes them loadably."""
    from angos.config import merge
    from angos.config_toml import to_toml

    doc = tomllib.loads(block)
    base = {k: v for k, v in DOC_BASE.items() if not (k == "blob_store" and "blob_store" in doc)}
    cfg = build_config(merge(base, doc))
    assert build_config(tomllib.loads(to_toml(cfg, redact=False))) == cfg
    tomllib.loads(to_toml(cfg))  # redacted, still TOML
