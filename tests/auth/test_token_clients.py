"""Real clients against a deny-by-default registry with a public namespace: skopeo, podman, docker and
oras-py pull ``public/*`` anonymously, are refused ``private/*`` (401 anonymous, 403 identified), and
push after logging in. Every one of them goes through the registry token flow (Bearer challenge,
``GET /token``, Bearer requests); none is given anything but the registry address and, to log in, a
username and password. containerd's ``ctr`` pulls with credentials through the OAuth2 form of the
token request (``POST /token``), without falling back to ``GET``.

docker is the Debian ``docker.io`` daemon, started here on a private data root, exec root and
socket with the vfs storage driver and no iptables or bridge (marked slow). Credentials of every
client go to files under the test's temporary directory, never to the machine's defaults.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import pytest
import requests

from ..conftest import skopeo, wait_for
from .conftest import Client, identity_toml, oci_layout, uniq

POLICY = """
[global.access_policy]
default = "deny"
rules = [
  "request.action in ['get-manifest', 'get-blob', 'list-tags', 'get-referrers'] && request.namespace.startsWith('public/')",
  "identity.id != null && request.action == 'get-api-version'",
  "identity.id == 'alice'",
]
"""


@pytest.fixture(scope="module")
def server(module_server):
    return module_server(identity_toml(alice="alice-pw", bob="bob-pw") + POLICY, workers=2)


@pytest.fixture(scope="module")
def images(server, tmp_path_factory):
    """One real image (a gzip tar layer) pushed by alice as public/<x>:v1 and private/<x>:v1."""
    src = tmp_path_factory.mktemp("image") / "layout"
    digest = oci_layout(src, "v1")
    public, private = f"public/{uniq('app')}", f"private/{uniq('app')}"
    for ns in (public, private):
        skopeo("copy", "--dest-tls-verify=false", "--dest-creds", "alice:alice-pw", f"oci:{src}:v1",
               f"docker://{server.host}/{ns}:v1")
    return public, private, digest


def stored_digest(server, ref: str) -> str | None:
    ns, tag = ref.rsplit(":", 1)
    r = Client(server.url, "alice", "alice-pw").head(f"{ns}/manifests/{tag}")
    return r.headers.get("Docker-Content-Digest") if r.status_code == 200 else None


def refused(res: subprocess.CompletedProcess, *words: str) -> bool:
    out = (res.stderr + res.stdout).lower()
    return res.returncode != 0 and any(w in out for w in words)


# ---------------------------------------------------------------- skopeo


def test_skopeo_pulls_public_anonymously_is_refused_private_and_pushes_after_login(server, images, tmp_path):
    public, private, digest = images
    host = server.host
    skopeo("copy", "--src-tls-verify=false", "--src-no-creds", f"docker://{host}/{public}:v1",
           f"oci:{tmp_path / 'pulled'}:v1")
    res = skopeo("inspect", "--tls-verify=false", "--no-creds", f"docker://{host}/{private}:v1", check=False)
    assert refused(res, "unauthorized", "authentication required"), res.stderr
    auth = str(tmp_path / "auth.json")
    for user in ("alice", "bob"):
        res = subprocess.run(["skopeo", "login", "--tls-verify=false", "--authfile", str(tmp_path / f"{user}.json"),
                              "-u", user, "--password-stdin", host], input=f"{user}-pw\n", capture_output=True,
                             text=True, timeout=60)
        assert res.returncode == 0, res.stderr
    shutil.copy(tmp_path / "alice.json", auth)
    pushed = f"private/{uniq('skopeo')}:v1"
    skopeo("copy", "--dest-tls-verify=false", "--dest-authfile", auth, f"oci:{tmp_path / 'pulled'}:v1",
           f"docker://{host}/{pushed}")
    assert stored_digest(server, pushed) == digest
    res = skopeo("inspect", "--tls-verify=false", "--authfile", str(tmp_path / "bob.json"),
                 f"docker://{host}/{private}:v1", check=False)
    assert refused(res, "denied"), res.stderr  # identified and not allowed: 403, not a login prompt


# ---------------------------------------------------------------- podman


def _podman(home: Path, runroot: str, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    env = {"CONTAINERS_CONF": str(home / "containers.conf"), "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
           "HOME": str(home), "REGISTRY_AUTH_FILE": str(home / "auth.json")}
    cmd = ["podman", "--root", str(home / "root"), "--runroot", runroot, "--storage-driver", "vfs", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180, env=env, input=stdin)


def test_podman_pulls_public_anonymously_is_refused_private_and_pushes_after_login(server, images, tmp_path):
    if shutil.which("podman") is None:
        pytest.fail("podman is not installed (make test installs it)")
    public, private, digest = images
    host = server.host
    (tmp_path / "containers.conf").write_text('[engine]\nevents_logger = "none"\ncgroup_manager = "cgroupfs"\n')
    (tmp_path / "auth.json").write_text('{"auths": {}}')  # no login yet (and never the machine's own file)
    # podman refuses a runroot path longer than 50 characters, which pytest's tmp_path is.
    with tempfile.TemporaryDirectory(prefix="angos-podman-") as runroot:
        res = _podman(tmp_path, runroot, "pull", "--tls-verify=false", f"{host}/{public}:v1")
        assert res.returncode == 0, res.stderr
        res = _podman(tmp_path, runroot, "pull", "--tls-verify=false", f"{host}/{private}:v1")
        assert refused(res, "unauthorized", "authentication required"), res.stderr
        res = _podman(tmp_path, runroot, "login", "--tls-verify=false", "-u", "alice", "--password-stdin", host,
                      stdin="alice-pw\n")
        assert res.returncode == 0, res.stderr
        pushed = f"private/{uniq('podman')}:v1"
        res = _podman(tmp_path, runroot, "push", "--tls-verify=false", f"{host}/{public}:v1", f"{host}/{pushed}")
        assert res.returncode == 0, res.stderr
        res = _podman(tmp_path, runroot, "pull", "--tls-verify=false", f"{host}/{private}:v1")
        assert res.returncode == 0, res.stderr
    assert stored_digest(server, pushed) is not None


# ---------------------------------------------------------------- docker


class Dockerd:
    """A private ``dockerd``: its own data root, exec root, socket and containerd namespace."""

    def __init__(self):
        # Unix socket paths must stay short: pytest's tmp_path is too long.
        self.dir = Path(tempfile.mkdtemp(prefix="angos-dockerd-", dir="/tmp"))
        self.sock = self.dir / "docker.sock"
        self.log = self.dir / "dockerd.log"
        # containerd namespaces allow letters and digits joined by single ".", "_" or "-";
        # mkdtemp's random suffix may put "_" right after the prefix's "-".
        self.namespace = "angos-" + re.sub(r"[^A-Za-z0-9]+", "-", self.dir.name).strip("-")
        self.proc: subprocess.Popen | None = None
        self.cli = "/usr/bin/docker" if os.path.exists("/usr/bin/docker") else shutil.which("docker")

    def start(self) -> "Dockerd":
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                ["dockerd", "--storage-driver", "vfs", "--iptables=false", "--ip-masq=false", "--bridge=none",
                 "--data-root", str(self.dir / "root"), "--exec-root", str(self.dir / "exec"),
                 "--pidfile", str(self.dir / "dockerd.pid"), "--host", f"unix://{self.sock}",
                 "--containerd-namespace", self.namespace,
                 "--containerd-plugins-namespace", f"{self.namespace}-plugins",
                 "--insecure-registry", "127.0.0.0/8"],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        return self

    def ready(self) -> bool:
        if self.proc.poll() is not None:
            return True  # exited: stop waiting, the caller looks at why
        return self.docker("version", config=self.dir, check=False).returncode == 0

    def docker(self, *args: str, config: Path, stdin: str | None = None, check: bool = True):
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "DOCKER_HOST": f"unix://{self.sock}",
               "DOCKER_CONFIG": str(config), "HOME": str(config)}
        res = subprocess.run([self.cli, *args], capture_output=True, text=True, timeout=300, env=env, input=stdin)
        if check and res.returncode != 0:
            raise AssertionError(f"docker {' '.join(args)} failed ({res.returncode}):\n{res.stderr}")
        return res

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def dockerd():
    if shutil.which("dockerd") is None:
        pytest.fail("dockerd is not installed (make test installs Debian's docker.io)")
    daemon = Dockerd().start()
    try:
        wait_for(daemon.ready, timeout=90, what="dockerd to answer on its socket")
        if daemon.proc.poll() is not None:
            pytest.skip(f"dockerd cannot start on this machine: {daemon.log.read_text()[-1500:]}")
        yield daemon
    finally:
        daemon.stop()


@pytest.mark.slow
def test_docker_pulls_public_anonymously_is_refused_private_and_pushes_after_login(server, images, dockerd,
                                                                                    tmp_path):
    public, private, digest = images
    host = server.host
    anon, alice, bob = (tmp_path / "anon", tmp_path / "alice", tmp_path / "bob")
    for d in (anon, alice, bob):
        d.mkdir()
    dockerd.docker("pull", f"{host}/{public}:v1", config=anon)
    res = dockerd.docker("pull", f"{host}/{private}:v1", config=anon, check=False)
    assert refused(res, "unauthorized", "authentication required"), res.stderr
    assert "no basic auth credentials" not in res.stderr
    for user, cfg in (("alice", alice), ("bob", bob)):
        res = dockerd.docker("login", "-u", user, "--password-stdin", host, config=cfg, stdin=f"{user}-pw\n")
        assert "Login Succeeded" in res.stdout
    res = dockerd.docker("login", "-u", "alice", "--password-stdin", host, config=tmp_path, stdin="nope\n",
                         check=False)
    assert res.returncode != 0  # a wrong password fails at login, not at the first push
    pushed = f"private/{uniq('docker')}:v1"
    dockerd.docker("tag", f"{host}/{public}:v1", f"{host}/{pushed}", config=alice)
    dockerd.docker("push", f"{host}/{pushed}", config=alice)
    assert stored_digest(server, pushed) is not None
    dockerd.docker("pull", f"{host}/{private}:v1", config=alice)
    res = dockerd.docker("pull", f"{host}/{private}:v1", config=bob, check=False)
    assert refused(res, "denied"), res.stderr


# ---------------------------------------------------------------- oras-py


def test_oras_py_with_its_defaults_pulls_public_anonymously_and_pushes_after_login(server, tmp_path, monkeypatch):
    import oras.client

    monkeypatch.setenv("HOME", str(tmp_path))  # no credentials but the ones this test writes
    monkeypatch.delenv("DOCKER_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)  # oras-py only pushes files below the working directory
    artifact = tmp_path / "notes.txt"
    artifact.write_text("anonymous pulls work " + uniq())
    public, private = f"public/{uniq('oras')}:v1", f"private/{uniq('oras')}:v1"

    writer = oras.client.OrasClient(hostname=server.host, insecure=True)
    writer.login("alice", "alice-pw", hostname=server.host, config_path=str(tmp_path / "alice.json"))
    for target in (public, private):
        writer.push(files=[artifact.name], target=f"{server.host}/{target}")
    assert stored_digest(server, private) is not None

    reader = oras.client.OrasClient(hostname=server.host, insecure=True)
    out = tmp_path / "pulled"
    files = reader.pull(target=f"{server.host}/{public}", outdir=str(out))
    assert [Path(f).read_text() for f in files] == [artifact.read_text()]
    with pytest.raises(Exception) as err:
        reader.pull(target=f"{server.host}/{private}", outdir=str(tmp_path / "refused"))
    assert "unauthorized" in str(err.value).lower()
    assert not (tmp_path / "refused" / artifact.name).exists()

    bob = oras.client.OrasClient(hostname=server.host, insecure=True)
    bob.login("bob", "bob-pw", hostname=server.host, config_path=str(tmp_path / "bob.json"))
    with pytest.raises(Exception) as err:
        bob.push(files=[artifact.name], target=f"{server.host}/private/{uniq('bob')}:v1")
    assert "denied" in str(err.value).lower()


# ---------------------------------------------------------------- containerd


def http_requests(server, method: str, route: str) -> dict[str, float]:
    """``http_requests_total`` of one method and route (action), by status."""
    out = {}
    text = requests.get(server.url + "/metrics", auth=("alice", "alice-pw"), timeout=30).text
    for line in text.splitlines():
        if (line.startswith("http_requests_total{") and f'method="{method}"' in line
                and f'route="{route}"' in line):
            out[line.split('status="')[1].split('"')[0]] = float(line.rsplit(" ", 1)[1])
    return out


@pytest.mark.slow
def test_containerd_pulls_with_credentials_through_the_oauth2_token_request(server, images, dockerd):
    # ctr resolves and fetches in its own process (containerd's remotes/docker, as nerdctl, BuildKit
    # and the kubelet's CRI do) and stores through dockerd's containerd. With credentials it asks for
    # its token with an OAuth2 POST: that request, not the GET it falls back to, gives it the token.
    public, private, digest = images
    # The containerd dockerd started for itself, or the machine's, which dockerd uses when one runs.
    own = dockerd.dir / "exec" / "containerd" / "containerd.sock"
    sock = own if own.exists() else Path("/run/containerd/containerd.sock")
    ctr = ["ctr", "--address", str(sock), "--namespace", dockerd.namespace]

    def pull(*args):
        return subprocess.run([*ctr, "images", "pull", "--plain-http", *args], capture_output=True, text=True,
                              timeout=300)

    before = http_requests(server, "POST", "get-token"), http_requests(server, "GET", "get-token")
    res = pull("--user", "alice:alice-pw", f"{server.host}/{private}:v1")
    assert res.returncode == 0, res.stderr
    listed = subprocess.run([*ctr, "images", "ls", "-q"], capture_output=True, text=True, timeout=60).stdout
    assert f"{server.host}/{private}:v1" in listed.split()
    posts, gets = http_requests(server, "POST", "get-token"), http_requests(server, "GET", "get-token")
    assert posts.get("200", 0) - before[0].get("200", 0) >= 1
    assert sum(gets.values()) == sum(before[1].values())  # no fallback to GET
    res = pull("--user", "alice:wrong", f"{server.host}/{private}:v1")
    assert refused(res, "unauthorized", "401"), res.stderr
    res = pull(f"{server.host}/{public}:v1")  # anonymous: containerd asks with GET, no credentials to post
    assert res.returncode == 0, res.stderr
