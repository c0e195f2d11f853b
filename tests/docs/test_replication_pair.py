"""docs/replication.md, "Two instances, active-active", on one box, as written.

The guide's ``policy.toml``, ``a.toml`` and ``b.toml`` are written to a
directory (ports moved to free ones), two real servers start there with the
guide's ``angos -c policy.toml -c <x>.toml server`` arguments, and the guide's
shell lines run unchanged otherwise: they wait for ``/readyz``, push as
``alice`` to ``a`` with skopeo, wait with ``angos replication-status`` and
inspect the image on ``b`` as ``bob``. Then the claims the guide makes about
that pair are checked against the two servers:

- the push comes back once as a ``converged`` job (the echo) that sends
  nothing, and ``a`` queues nothing more;
- a push to ``b`` shows up on ``a`` the same way;
- "Who may do what": who gets 401, 403 or in, global actions included, and a
  reader's skopeo push is refused;
- each documented hash is the hash of the password its comment names.
"""

from __future__ import annotations

import re
import shlex

import argon2
import pytest
import requests

from ..conftest import free_port, skopeo, wait_for
from .snippets import Server, block, on_ports, oci_archive, run_sh

DOC = "docs/replication.md"
pytestmark = pytest.mark.timeout(600)


def _identities() -> dict[str, tuple[str, str]]:
    """``{username: (hash, password)}`` from policy.toml's ``angos argon <<< password`` comments."""
    found = re.findall(r'username = "([^"]+)"\npassword = "([^"]+)"\s+# angos argon <<< (\S+)',
                       block(DOC, "toml", first="# policy.toml"))
    return {user: (hashed, password) for user, hashed, password in found}


def _auth(user: str) -> tuple[str, str]:
    return user, _identities()[user][1]


def _metric(server_url: str, name: str, **labels) -> float:
    """The sum of ``name``'s samples whose labels include ``labels`` (0 when none)."""
    r = requests.get(server_url + "/metrics", timeout=10)
    assert r.status_code == 200, f"/metrics answered {r.status_code}"
    total = 0.0
    for line in r.text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def _status(server_url: str, tag: str, downstream: str) -> str | None:
    r = requests.get(f"{server_url}/_ext/nginx/app/_replication/{tag}", auth=_auth("bob"), timeout=10)
    if r.status_code not in (200, 202):
        return None
    rows = [d for d in r.json()["downstreams"] if d["downstream"] == downstream]
    return rows[0]["state"] if rows else None


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """The guide's two instances, after its shell lines ran: (a url, b url, script result, workdir)."""
    work = tmp_path_factory.mktemp("pair")
    ports = {8000: free_port(), 8001: free_port()}
    (work / "policy.toml").write_text(block(DOC, "toml", first="# policy.toml"))
    for name in ("a", "b"):
        (work / f"{name}.toml").write_text(on_ports(block(DOC, "toml", first=f"# {name}.toml"), ports))
    script = on_ports(block(DOC, "sh", containing="-c a.toml server &"), ports)
    starts = [line for line in script.splitlines() if line.startswith("angos ") and line.endswith(" server &")]
    assert len(starts) == 2, script
    archive, digest = oci_archive(work)
    servers = []
    try:
        for line in starts:
            args = shlex.split(line[:-len(" &")])
            assert args[0] == "angos" and args[-1] == "server", line
            files = [args[i + 1] for i, a in enumerate(args) if a == "-c"]
            servers.append(Server(work, *files, name=files[-1].removesuffix(".toml")).start())
        rest = "\n".join(line for line in script.splitlines() if line not in starts)
        result = run_sh(rest, cwd=work)
        yield {"a": f"http://127.0.0.1:{ports[8000]}", "b": f"http://127.0.0.1:{ports[8001]}", "result": result,
               "digest": digest, "work": work, "ports": ports, "servers": servers, "script": rest}
    finally:
        for s in servers:
            s.stop()


def _logs(pair) -> str:
    return "\n".join(f"--- {s.log_path.name}\n{s.logs()[-3000:]}" for s in pair["servers"])


def test_guide_pushes_to_a_and_b_serves_it_then_b_echoes_once_converged(pair):
    res = pair["result"]
    assert res.returncode == 0, f"{res.stdout}\n{res.stderr}\n{_logs(pair)}"
    assert pair["digest"] in res.stdout  # skopeo inspect on b names the pushed manifest
    a, b = pair["a"], pair["b"]
    assert _status(a, "v1", "b") == "in_sync"  # what replication-status --wait waited for
    # The echo: b queued a job back to a, which found a already holding v1.
    wait_for(lambda: _status(b, "v1", "a") == "in_sync", timeout=60, what="b's status of v1 on a")
    wait_for(lambda: _metric(b, "angos_replication_push_total", downstream="a", outcome="converged") >= 1,
             timeout=60, what="b's converged echo job")
    assert _metric(b, "angos_replication_push_total", downstream="a", outcome="converged") == 1
    assert _metric(b, "angos_replication_push_total", downstream="a", outcome="pushed") == 0
    assert _metric(b, "angos_replication_sent_bytes_total", downstream="a") == 0
    # The echo changed nothing on a, so a queued nothing after alice's push: the change stopped.
    assert _metric(a, "angos_job_queue_enqueued_total", queue="replication") == 1


def test_a_push_to_b_shows_up_on_a_the_same_way(pair, tmp_path):
    swapped = {pair["ports"][8000]: pair["ports"][8001], pair["ports"][8001]: pair["ports"][8000]}
    lines = [line for line in pair["script"].splitlines() if line.startswith(("skopeo ", "ANGOS_URL="))]
    assert len(lines) == 3, pair["script"]
    # The guide's three lines with the two instances' roles swapped, for a new tag and image.
    script = re.sub(r"\d+", lambda m: str(swapped.get(int(m.group()), m.group())), "\n".join(lines))
    script = script.replace("nginx/app:v1", "nginx/app:v2")
    _archive, digest = oci_archive(tmp_path)
    res = run_sh(script, cwd=tmp_path)
    assert res.returncode == 0, f"{res.stdout}\n{res.stderr}\n{_logs(pair)}"
    assert digest in res.stdout
    r = requests.head(f"{pair['a']}/v2/nginx/app/manifests/v2", auth=_auth("bob"), timeout=10)
    assert (r.status_code, r.headers.get("Docker-Content-Digest")) == (200, digest)


@pytest.mark.parametrize("instance", ["a", "b"])
def test_who_may_do_what(pair, instance):
    url = pair[instance]

    def status(method, path, user=None):
        r = requests.request(method, url + path, auth=_auth(user) if user else None, timeout=30)
        return r.status_code

    # Anyone: the probes, and /metrics from this host.
    assert status("GET", "/healthz") == 200
    assert status("GET", "/readyz") == 200
    assert status("GET", "/metrics") == 200
    # Nothing else without logging in, and GET /v2/ challenges so clients send their login.
    r = requests.get(url + "/v2/", timeout=10)
    assert r.status_code == 401 and r.headers["WWW-Authenticate"].startswith("Bearer "), r.headers
    assert status("GET", "/v2/nginx/app/tags/list") == 401
    # bob reads, writes nothing, and gets no global action but GET /v2/.
    assert status("GET", "/v2/", "bob") == 200
    assert status("GET", "/v2/nginx/app/tags/list", "bob") == 200
    assert status("POST", "/v2/nginx/app/blobs/uploads/", "bob") == 403
    assert status("DELETE", "/v2/nginx/app/manifests/v1", "bob") == 403
    assert status("GET", "/_ext/_changes", "bob") == 403
    assert status("GET", "/v2/_catalog", "bob") == 403
    assert status("GET", "/_ext/_jobs?queue=replication", "bob") == 403
    # alice and the replication account write; only the latter reads the change feed.
    for user in ("alice", "replicator"):
        r = requests.post(url + "/v2/nginx/app/blobs/uploads/", auth=_auth(user), timeout=30)
        assert r.status_code == 202, (user, r.status_code, r.text)
        location = r.headers["Location"]
        location = location if location.startswith("http") else url + location
        assert requests.delete(location, auth=_auth(user), timeout=30).status_code == 204
    assert status("GET", "/_ext/_changes", "alice") == 403
    assert status("GET", "/_ext/_changes", "replicator") == 200


def test_a_reader_cannot_push_with_skopeo(pair, tmp_path):
    _archive, _digest = oci_archive(tmp_path)
    res = skopeo("copy", "--dest-tls-verify=false", "--dest-creds", "bob:" + _auth("bob")[1],
                 f"oci-archive:{tmp_path / 'image.tar'}", f"docker://{pair['a'][len('http://'):]}/nginx/app:bob",
                 check=False)
    assert res.returncode != 0
    assert "denied" in res.stderr.lower() or "403" in res.stderr, res.stderr
    r = requests.head(f"{pair['a']}/v2/nginx/app/manifests/bob", auth=_auth("bob"), timeout=10)
    assert r.status_code == 404


def test_documented_hashes_are_of_the_documented_passwords():
    identities = _identities()
    assert set(identities) == {"alice", "bob", "replicator"}
    for user, (hashed, password) in identities.items():
        assert argon2.PasswordHasher().verify(hashed, password), user
    for name in ("a", "b"):
        downstream = block(DOC, "toml", first=f"# {name}.toml")
        assert f'password = "{identities["replicator"][1]}"' in downstream


def test_the_two_host_commands_are_the_tested_one_box_commands_with_host_names():
    """The two-host snippet cannot run here; it must be the tested one with the hosts put in."""
    two_hosts = block(DOC, "sh", containing="oci-archive:image.tar docker://angos-a:8000/").strip().splitlines()
    one_box = block(DOC, "sh", containing="-c a.toml server &").strip().splitlines()[-3:]
    as_one_box = [line.replace("angos-a:8000", "127.0.0.1:8000").replace("angos-b:8000", "127.0.0.1:8001")
                  for line in two_hosts]
    assert as_one_box == one_box
