"""The Debian package, built from this tree and installed on this machine.

``make deb``'s script builds ``angos_<version>_<arch>.deb`` once per module;
lintian runs on it in the background while the lifecycle test installs it
with apt (as root: CI runs as root on this kind of machine) and then runs the
installed units' ``ExecStart=`` commands the way systemd would (it is not PID 1
here, so no ``systemctl start``): as the ``angos`` user, with a clean
environment, inside each installed unit's own sandbox built from the unit file
with bubblewrap (:mod:`tests.sandbox`: read-only ``/``, only
``/var/lib/angos`` writable, private ``/tmp``, hidden homes, working directory
``/``, the unit's umask):

- install: user, directories, conffile, enabled units (verified as installed),
  the README and docs/ under /usr/share/doc/angos;
  the venv runs Debian's python3 with exactly the pinned versions;
- the server on the shipped default config (plus a second ``-c`` file that
  only moves the port) takes a push and serves the pull with skopeo, and
  writes nothing that the ``angos`` user does not own (and, by the sandbox,
  nothing outside /var/lib/angos);
- the timer's service (``angos-replicate.service``) runs its ``ExecStart``
  (``scrub --replicate``) the same way and succeeds; a preview with a
  downstream configured names the work it would queue;
- ``dpkg --purge`` removes the config, the code and the unit links and keeps
  /var/lib/angos; a reinstall over it serves the same image; an upgrade keeps
  an edited config and the data.

Whatever happens, the machine is left as found: package purged, the ``angos``
user and /var/lib/angos removed. State left by a run that was killed is
recognised by a marker file and cleaned at the next start; an ``angos``
installation the test did not make is never touched (the test fails instead).
Two runs on one machine (engineers share it) take turns through a file lock,
since both would install the same system package.

Why not a fresh debootstrap'ed Debian 12 root: creating one (minbase plus
python3) took about two minutes on this 2-core machine by itself, which would
put this module near six minutes; the CI machine is a fresh Debian 12 of the
same kind, so installing on it checks the same thing.
"""

from __future__ import annotations

import fcntl
import json
import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import pytest

from ..conftest import free_port, skopeo, wait_http
from ..images import layout_digest, single_platform_image
from ..sandbox import exec_start, sandboxed, umask

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parents[2]
VERSION = re.search(r'__version__ = "([^"]+)"', (ROOT / "angos" / "__init__.py").read_text()).group(1)
MARKER = Path("/var/tmp/angos-package-test.marker")
LOCK = Path("/var/tmp/angos-package-test.lock")
DATA = Path("/var/lib/angos")
CONFIG = Path("/etc/angos/config.toml")
# What systemd gives the service: no inherited virtualenv, PYTHONPATH or pip settings.
SERVICE_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8", "ANGOS_LOG": "info"}
APT_ENV = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
UNITS = ("angos-server.service", "angos-worker.service", "angos-replicate.service", "angos-replicate.timer")
ENABLED = {"multi-user.target.wants": ("angos-server.service", "angos-worker.service"),
           "timers.target.wants": ("angos-replicate.timer",)}


def run(*cmd: str, env: dict | None = None, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess:
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout, cwd="/")
    if check and res.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {res.returncode}:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}")
    return res


UNIT_DIR = Path("/lib/systemd/system")


def unit_command(unit_name: str, config_files=(), extra_args=()) -> tuple[list[str], dict, int | None]:
    """The installed unit's ExecStart (plus ``-c`` files after its own, and arguments), inside its
    sandbox as its user: (argv, environment, umask)."""
    unit = UNIT_DIR / unit_name
    words = exec_start(unit)
    assert words[:3] == ["/usr/bin/angos", "-c", str(CONFIG)], words
    command = words[:3] + [w for f in config_files for w in ("-c", str(f))] + words[3:] + list(extra_args)
    argv, env = sandboxed(unit, command, ro_binds=sorted({str(Path(f).parent) for f in config_files}))
    return argv, {**SERVICE_ENV, **env}, umask(unit)


def run_unit(unit_name: str, config_files=(), extra_args=()) -> subprocess.CompletedProcess:
    argv, env, mask = unit_command(unit_name, config_files, extra_args)
    res = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=300, cwd="/", umask=mask)
    assert res.returncode == 0, f"{unit_name} exited {res.returncode}:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    return res


def main_process(root: int) -> int:
    """The service's main process below bwrap and setpriv (which exec): the gunicorn master."""
    todo = [root]
    while todo:
        pid = todo.pop(0)
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"/usr/bin/angos" in cmdline and pid != root:
            return pid
        todo += [int(p) for p in run("pgrep", "-P", str(pid), check=False).stdout.split()]
    raise AssertionError(f"no angos process under {root}")


def package_state() -> str:
    res = run("dpkg-query", "-W", "-f=${db:Status-Status}", "angos", check=False)
    return res.stdout.strip() if res.returncode == 0 and res.stdout.strip() else "not-installed"


def leftovers() -> list[str]:
    found = []
    if package_state() != "not-installed":
        found.append("the angos package")
    if DATA.exists():
        found.append(str(DATA))
    try:
        pwd.getpwnam("angos")
        found.append("the angos user")
    except KeyError:
        pass
    return found


def clean_machine() -> None:
    """Purge the package and remove what purge keeps on purpose (data, user)."""
    run("dpkg", "--purge", "angos", env=APT_ENV, check=False)
    shutil.rmtree(DATA, ignore_errors=True)
    run("userdel", "angos", check=False)
    run("groupdel", "angos", check=False)
    MARKER.unlink(missing_ok=True)


def apt_install(deb: Path) -> None:
    run("apt-get", "install", "-y", "-q", "--no-install-recommends", str(deb), env=APT_ENV)


class InstalledServer:
    """``/usr/bin/angos server`` as the angos user, as angos-server.service runs it."""

    def __init__(self, workdir: Path):
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        # The override must be readable by angos: pytest's tmp dirs are root-only.
        self.dir = Path(tempfile.mkdtemp(prefix="angos-pkg-", dir="/tmp"))
        self.dir.chmod(0o755)
        self.override = self.dir / "port.toml"
        self.override.write_text(f"[server]\nport = {self.port}\n")
        self.override.chmod(0o644)
        self.log_path = workdir / f"server-{self.port}.log"
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> "InstalledServer":
        log = open(self.log_path, "ab")
        argv, env, mask = unit_command("angos-server.service", [self.override])
        self.proc = subprocess.Popen(argv, env=env, cwd="/", stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True, umask=mask)
        log.close()
        try:
            wait_http(f"http://{self.host}/healthz", self.proc, timeout=60, ok=(200,))
        except Exception:
            self.__exit__()
            raise RuntimeError(f"installed server did not come up:\n{self.log_path.read_text()[-3000:]}")
        return self

    def __exit__(self, *exc) -> None:
        if self.proc is not None and self.proc.poll() is None:
            # KillMode=mixed: SIGTERM to the main process (the gunicorn master) only.
            try:
                os.kill(main_process(self.proc.pid), signal.SIGTERM)
            except (AssertionError, ProcessLookupError):
                pass
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def deb(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip("installing a .deb needs root (CI runs as root)")
    for tool in ("dpkg-buildpackage", "dh_virtualenv", "lintian", "systemd-analyze", "skopeo"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is not installed (make test installs APT_TEST_PACKAGES)")
    out = tmp_path_factory.mktemp("deb")
    res = subprocess.run([str(ROOT / "packaging" / "deb" / "build.sh"), str(out)], capture_output=True,
                         text=True, timeout=600)
    assert res.returncode == 0, f"build failed:\n{res.stdout[-5000:]}\n{res.stderr[-5000:]}"
    arch = run("dpkg", "--print-architecture").stdout.strip()
    debs = sorted(out.glob("*.deb"))
    assert [d.name for d in debs] == [f"angos_{VERSION}_{arch}.deb"]
    # lintian takes most of a minute; it reads only the .deb, so it runs while
    # the lifecycle test installs the same file.
    # Its report goes to a file: a pipe nobody reads until later could fill and stall it.
    report = out / "lintian.txt"
    with open(report, "w") as fh:
        lint = subprocess.Popen(["lintian", "--fail-on", "error", str(debs[0])], stdout=fh,
                                stderr=subprocess.STDOUT, cwd=out)
    yield debs[0], (lint, report)
    if lint.poll() is None:
        lint.kill()
    lint.wait()


@pytest.fixture
def clean_slate():
    with open(LOCK, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when this process ends, however it ends
        yield from _clean_slate()


def _clean_slate():
    found = leftovers()
    if found and not MARKER.exists():
        pytest.fail(f"{', '.join(found)} already exist(s) on this machine and were not made by this test; "
                    "remove them (dpkg --purge angos; rm -r /var/lib/angos; userdel angos) to run it")
    clean_machine()  # a killed earlier run's state, recognised by the marker
    MARKER.touch()
    yield
    clean_machine()


def upgrade_of(deb: Path, workdir: Path) -> Path:
    """The same package with a higher version: what the next release's .deb looks like to dpkg."""
    tree = workdir / "upgrade-tree"
    run("dpkg-deb", "-R", str(deb), str(tree))
    control = tree / "DEBIAN" / "control"
    control.write_text(control.read_text().replace(f"Version: {VERSION}\n", f"Version: {VERSION}+upgrade1\n"))
    out = workdir / f"angos_{VERSION}+upgrade1.deb"
    run("dpkg-deb", "-Zgzip", "-b", str(tree), str(out))
    return out


def assert_pull_matches(host: str, digest: str, dest: Path) -> None:
    skopeo("copy", "--src-tls-verify=false", f"docker://{host}/pkg/app:v1", f"oci:{dest}:v1")
    assert layout_digest(dest, "v1") == digest


def test_installed_package_serves_as_angos_purge_drops_config_reinstall_and_upgrade_keep_data(
        deb, clean_slate, tmp_path):
    deb_path, _lint = deb
    apt_install(deb_path)

    # -- what the install laid down
    user = pwd.getpwnam("angos")
    assert user.pw_uid < 1000 and user.pw_shell.endswith("nologin")  # a system user
    st = DATA.stat()
    assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (user.pw_uid, user.pw_gid, 0o750)
    etc = CONFIG.parent.stat()
    assert (etc.st_uid, etc.st_gid, etc.st_mode & 0o777) == (0, user.pw_gid, 0o750)  # may hold secrets
    assert CONFIG.read_text() == (ROOT / "packaging" / "deb" / "config.toml").read_text()
    assert str(CONFIG) in run("dpkg-query", "-W", "-f=${Conffiles}", "angos").stdout
    assert os.path.realpath("/usr/bin/angos") == "/opt/venvs/angos/bin/angos"
    assert os.path.realpath("/opt/venvs/angos/bin/python") == os.path.realpath("/usr/bin/python3")
    for wants, units in ENABLED.items():
        for unit in units:
            link = f"/etc/systemd/system/{wants}/{unit}"
            assert os.path.realpath(link) == os.path.realpath(f"/lib/systemd/system/{unit}")
    # The installed units, unchanged, against the installed binaries.
    res = run("systemd-analyze", "verify", *[f"/lib/systemd/system/{u}" for u in UNITS])
    assert "angos-" not in res.stderr, res.stderr
    # Exactly the pinned versions, on Debian's interpreter.
    pins = dict(re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)", (ROOT / "packaging" / "requirements.txt").read_text(),
                           re.M))
    assert len(pins) > 10
    versions = json.loads(run(
        "/opt/venvs/angos/bin/python", "-c",
        "import importlib.metadata as m, json, re, sys;"
        "print(json.dumps({'python': list(sys.version_info[:2]),"
        " **{re.sub(r'[-_.]+', '-', d.metadata['Name']).lower(): d.version for d in m.distributions()}}))",
        env=SERVICE_ENV).stdout)
    assert versions["python"] == [3, 11]
    # Package data (the web UI's templates, stylesheet and script) is installed with the code.
    site = Path("/opt/venvs/angos/lib/python3.11/site-packages/angos/api/ui")
    assert (site / "templates" / "base.html").is_file() and (site / "templates" / "jobs.html").is_file()
    assert (site / "static" / "ui.css").is_file() and (site / "static" / "ui.js").is_file()
    assert {name: versions.get(name) for name in pins} == pins
    # The README and the shipped config point to docs/: every guide is installed beside the
    # README, compressed the way debhelper compresses the README (files over 4 KiB), and so are
    # the files below it (docs/images: the README's screenshots).
    doc = Path("/usr/share/doc/angos")
    assert (doc / "README.md.gz").is_file()
    for guide in sorted(p for p in (ROOT / "docs").rglob("*") if p.is_file()):
        shipped = doc / "docs" / guide.relative_to(ROOT / "docs")
        assert shipped.is_file() or shipped.with_name(guide.name + ".gz").is_file(), str(shipped)
    # The worker unit's ExecCondition, as installed: no [global.job_queue] in the
    # shipped config, so the (enabled) worker is skipped rather than failed.
    cond = run("runuser", "-u", "angos", "--", "/usr/libexec/angos/job-queue-configured", str(CONFIG),
               env=SERVICE_ENV, check=False)
    assert cond.returncode == 1, cond.stdout + cond.stderr

    # -- serve on the shipped config, push and pull as the angos user
    image = single_platform_image(tmp_path / "src", tag="v1")
    with InstalledServer(tmp_path) as server:
        skopeo("copy", "--dest-tls-verify=false", image.oci_ref, f"docker://{server.host}/pkg/app:v1")
        assert_pull_matches(server.host, image.digest, tmp_path / "pull1")
        # gevent patches the installed interpreter before anything imports ssl or sockets.
        assert "MonkeyPatchWarning" not in server.log_path.read_text()
        # Nothing under the data directory that the service could not manage itself.
        foreign = [str(p) for p in DATA.rglob("*") if p.lstat().st_uid != user.pw_uid]
        assert foreign == []

        assert "Read-only file system" not in server.log_path.read_text()

        # -- the nightly timer's service, as installed: its ExecStart as angos in its sandbox
        plain = run_unit("angos-replicate.service")
        assert "failed=0" in plain.stdout + plain.stderr
        assert [str(p) for p in DATA.rglob("*") if p.lstat().st_uid != user.pw_uid] == []
        # previewing a reconcile to a downstream: it reads the installed layout and names the work
        mirror = server.dir / "mirror.toml"
        mirror.write_text(f'[repository."pkg"]\n[[repository."pkg".downstream]]\nname = "mirror"\n'
                          f'url = "http://{server.host}/mirror"\n')
        mirror.chmod(0o644)
        preview = run_unit("angos-replicate.service", [mirror], ["--dry-run"])
        out = preview.stdout + preview.stderr
        assert "namespace=mirror/app tag=v1" in out and "failed=0" in out, out

    # -- purge: config, code and unit links go; the images stay
    run("dpkg", "--purge", "angos", env=APT_ENV)
    assert not CONFIG.exists() and not CONFIG.parent.exists()
    assert not Path("/usr/bin/angos").exists() and not Path("/opt/venvs/angos").exists()
    for wants, units in ENABLED.items():
        for unit in units:
            assert not os.path.lexists(f"/etc/systemd/system/{wants}/{unit}")
    assert any(DATA.joinpath("blobs").rglob("*"))

    # -- reinstall over the existing data directory: the image is still served
    apt_install(deb_path)
    assert CONFIG.exists()
    with InstalledServer(tmp_path) as server:
        assert_pull_matches(server.host, image.digest, tmp_path / "pull2")

    # -- upgrade: an edited config and the data survive
    edited = CONFIG.read_text().replace("# workers = 4", "workers = 1")
    assert edited != CONFIG.read_text()
    CONFIG.write_text(edited)
    apt_install(upgrade_of(deb_path, tmp_path))
    assert run("dpkg-query", "-W", "-f=${Version}", "angos").stdout == f"{VERSION}+upgrade1"
    assert CONFIG.read_text() == edited
    with InstalledServer(tmp_path) as server:
        assert_pull_matches(server.host, image.digest, tmp_path / "pull3")


def test_lintian_reports_no_errors(deb):
    _deb_path, (lint, report) = deb
    lint.wait(timeout=600)
    out = report.read_text()
    errors = [line for line in out.splitlines() if line.startswith("E:")]
    assert errors == [] and lint.returncode == 0, out[-5000:]
