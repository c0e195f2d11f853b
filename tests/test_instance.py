"""Two servers on one data directory (angos.instance).

- a second server whose repositories or downstreams differ from those of the server running on
  the directory refuses to start, with one line naming the other server and the way out, and the
  first keeps serving;
- a second server with the same repositories and downstreams (another port) may join;
- ``[global] shared_data_directory = true`` lets servers with different configurations share it;
- a restart with a changed configuration is no conflict (the old server is gone);
- a live reload that changes the repositories records them: a server with the new
  configuration may then join, and one with the old configuration is refused.
"""

from __future__ import annotations

import fcntl
import json
import signal

import requests

from angos.config import load_config
from angos.instance import fingerprint

from .conftest import wait_for


def _config(data, repos: str, extra: str = "") -> str:
    return (f'[server]\nbind_address = "127.0.0.1"\nport = @PORT@\nworkers = 1\n\n{extra}'
            f'[global.access_policy]\ndefault = "allow"\n\n[blob_store.fs]\nroot_dir = "{data}"\n\n{repos}')


TEAM = '[repository."team"]\nimmutable_tags = true\n'
TEAM_PEER = TEAM + '[[repository."team".downstream]]\nname = "peer"\nurl = "http://127.0.0.1:9"\n'
SHARED = "[global]\nshared_data_directory = true\n\n"


def _refused(server) -> str:
    assert server.proc.wait(60) == 1, server.logs()
    errors = [line for line in server.logs().splitlines() if line.startswith("angos: ")]
    assert len(errors) == 1, server.logs()
    assert "Traceback" not in server.logs()
    return errors[0]


def test_a_server_with_other_downstreams_on_the_same_directory_is_refused(angos_factory, tmp_path):
    data = tmp_path / "data"
    first = angos_factory(config_text=_config(data, TEAM))
    second = angos_factory(config_text=_config(data, TEAM_PEER), start=False)
    second.start(wait=False)
    line = _refused(second)
    assert f"pid {first.pid}" in line and f"127.0.0.1:{first.port}" in line and str(first.config_path) in line
    assert str(data) in line and "shared_data_directory = true" in line
    assert requests.get(first.url + "/v2/", timeout=30).status_code == 200


def test_a_server_with_the_same_repositories_may_join_and_a_shared_directory_takes_any(angos_factory, tmp_path):
    data = tmp_path / "data"
    first = angos_factory(config_text=_config(data, TEAM))
    same = angos_factory(config_text=_config(data, TEAM, extra="[global]\nmax_concurrent_requests = 500\n\n"))
    other = angos_factory(config_text=_config(data, TEAM_PEER, extra=SHARED))
    for server in (first, same, other):
        assert requests.get(server.url + "/healthz", timeout=30).status_code == 200


def test_a_restart_with_a_changed_configuration_starts(angos_factory, tmp_path):
    data = tmp_path / "data"
    first = angos_factory(config_text=_config(data, TEAM))
    assert first.stop() == 0
    changed = angos_factory(config_text=_config(data, TEAM_PEER))
    assert requests.get(changed.url + "/healthz", timeout=30).status_code == 200


def _recorded(record) -> dict:
    """The instance record as the servers read it: under the flock they write it under (it is
    rewritten in place, so a reader without the lock may find it empty)."""
    with open(record, encoding="utf-8") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_SH)
        return json.loads(fh.read())


def test_a_reload_records_the_new_configuration_instead_of_refusing(angos_factory, tmp_path):
    data = tmp_path / "data"
    server = angos_factory(config_text=_config(data, TEAM))
    record = data / "_jobs" / "instance.json"
    old = server.config_path.read_text()
    server.config_path.write_text(old.replace(TEAM, TEAM_PEER))
    server.proc.send_signal(signal.SIGHUP)
    new_fp = fingerprint(load_config([str(server.config_path)]))
    wait_for(lambda: _recorded(record).get("fingerprint") == new_fp, what="the reload to be recorded")
    assert requests.get(server.url + "/healthz", timeout=30).status_code == 200

    joining = angos_factory(config_text=_config(data, TEAM_PEER))
    assert requests.get(joining.url + "/healthz", timeout=30).status_code == 200
    stale = angos_factory(config_text=_config(data, TEAM), start=False)
    stale.start(wait=False)
    assert "another angos server" in _refused(stale)
