"""``angos replication-status`` against running servers: its exit code in each state (0 in sync,
1 not, 2 no answer), its one-line reasons, credentials from the environment, and the CI step
docs/replication.md shows (skopeo push, then wait), run exactly as written."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import requests
from argon2 import PasswordHasher

from ..conftest import ANGOS, ROOT, free_port, wait_for
from ..images import single_platform_image
from .conftest import remote_digest, source_config
from .test_status import HELD, Worker, author_time, drain, push, waiting


def cli(*args, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    full = dict(os.environ, PYTHONPATH=str(ROOT))
    for key in ("ANGOS_URL", "ANGOS_USERNAME", "ANGOS_PASSWORD"):
        full.pop(key, None)
    full.update(env or {})
    return subprocess.run([*ANGOS, "replication-status", *args], capture_output=True, text=True, env=full,
                          timeout=timeout, cwd=ROOT)


def test_exit_codes_and_reasons_in_each_state(angos_factory):
    peer = angos_factory()
    source = angos_factory(config_text=source_config({"name": "peer", "url": peer.url}, extra=HELD))
    url = {"ANGOS_URL": source.url}
    ns = "nginx/app"
    d = push(source, ns, "v1", "one")
    since = author_time(source, ns, "v1")

    res = cli(f"{ns}:v1", env=url)
    assert res.returncode == 1, res.stderr
    assert res.stdout.strip() == f"{ns}:v1 not in sync: peer pending since {since}"
    res = cli(f"{ns}:v1", "--wait", "1s", "--url", source.url)
    assert res.returncode == 1 and "peer pending" in res.stdout
    res = cli(ns, env=url)
    assert res.returncode == 1 and res.stdout.strip() == f"{ns} not in sync: v1: peer pending since {since}"

    drain(source)
    res = cli(f"{ns}:v1", env=url)
    assert (res.returncode, res.stdout.strip()) == (0, f"{ns}:v1 in sync ({d}) on peer"), res.stderr
    assert cli(ns, "--downstream", "peer", env=url).returncode == 0
    res = cli(f"{ns}:v1", "--json", env=url)
    assert res.returncode == 0 and json.loads(res.stdout)["downstreams"][0]["state"] == "in_sync"
    assert remote_digest(peer, ns, "v1") == d

    push(source, "other/app", "v1", "elsewhere")  # outside every replicated repository
    closed = f"http://127.0.0.1:{free_port()}"
    for args, env, words in (
            ((f"{ns}:v1",), {}, "no server"),
            ((f"{ns}:v1", "--url", closed), {}, "cannot reach"),
            (("nginx/nope:v1",), url, "404: NAME_UNKNOWN"),
            ((f"{ns}:nope",), url, "404: MANIFEST_UNKNOWN"),
            ((f"{ns}:v1", "--downstream", "nope"), url, "400: UNSUPPORTED"),
            (("other/app:v1",), url, "no downstream replicates other/app"),
            (("Bad..Name:v1",), url, "invalid repository name"),
            ((f"{ns}:v1", "--wait", "soon"), url, "duration")):
        res = cli(*args, env=env)
        assert res.returncode == 2 and words in res.stderr and res.stdout == "", (args, res.stdout, res.stderr)


def test_credentials_come_from_the_environment(angos_factory):
    pw = PasswordHasher().hash("s3cret")
    policy = f"""
[auth.identity.alice]
username = "alice"
password = "{pw}"

[auth.identity.bob]
username = "bob"
password = "{pw}"

[global.access_policy]
default = "deny"
rules = ["request.action != 'get-replication-status' || identity.id == 'alice'"]
"""
    source = angos_factory(config_text=source_config({"name": "peer", "url": "http://127.0.0.1:9"},
                                                     extra=HELD + policy))
    push(source, "nginx/app", "v1", "one")  # the push itself is allowed to anyone by the policy
    env = {"ANGOS_URL": source.url}
    res = cli("nginx/app:v1", env=env)
    assert res.returncode == 2 and "401" in res.stderr
    res = cli("nginx/app:v1", env=dict(env, ANGOS_USERNAME="alice", ANGOS_PASSWORD="wrong"))
    assert res.returncode == 2 and "401" in res.stderr
    res = cli("nginx/app:v1", env=dict(env, ANGOS_USERNAME="bob", ANGOS_PASSWORD="s3cret"))
    assert res.returncode == 2 and "403" in res.stderr
    res = cli("nginx/app:v1", env=dict(env, ANGOS_USERNAME="alice", ANGOS_PASSWORD="s3cret"))
    assert res.returncode == 1 and "peer pending" in res.stdout


def _ci_step() -> str:
    text = (ROOT / "docs" / "replication.md").read_text()
    # The CI step is the one pushing a build's OCI layout (the pair walkthroughs push an archive).
    steps = [b for b in re.findall(r"```sh\n(.*?)```", text, re.S)
             if "replication-status" in b and "skopeo" in b and "oci:./image:v1" in b]
    assert len(steps) == 1, steps
    return steps[0]


def test_the_documented_ci_step_pushes_with_skopeo_and_waits_until_the_downstream_has_it(angos_factory,
                                                                                          tmp_path):
    peer = angos_factory()
    source = angos_factory(config_text=source_config({"name": "peer", "url": peer.url}, extra=HELD))
    image = single_platform_image(tmp_path / "image", "v1")
    step = _ci_step()
    assert "angos-a:8000" in step and "oci:./image:v1" in step
    script = step.replace("angos-a:8000", source.host).replace("oci:./image:v1", image.oci_ref)
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
               PYTHONPATH=str(ROOT))
    for key in ("ANGOS_URL", "ANGOS_USERNAME", "ANGOS_PASSWORD"):
        env.pop(key, None)
    proc = subprocess.Popen(["bash", "-e", "-c", script], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        # The push is done and the step is waiting (its request is in flight) before any job runs.
        wait_for(lambda: requests.head(source.v2("nginx/app/manifests/v1"), timeout=10).status_code == 200,
                 timeout=120, what="skopeo's push")
        waiting(source, 1)
        assert proc.poll() is None
        with Worker(source):
            out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, (out, err)
    assert out.strip().splitlines()[-1] == f"nginx/app:v1 in sync ({image.digest}) on peer"  # after skopeo's
    assert remote_digest(peer, "nginx/app", "v1") == image.digest
    assert requests.get(source.url + "/_ext/nginx/app/_replication/v1", timeout=10).status_code == 200
