"""A systemd unit's sandbox without systemd as PID 1: the same view of the file system, built
with bubblewrap (Debian's ``bubblewrap``), for running a command the way the unit would.

:func:`unit_settings` reads a unit file; :func:`sandboxed` turns the settings that decide
what a service can see and write into a ``bwrap`` command line:

========================  =====================================================================
``ProtectSystem=strict``  ``/`` bound read-only (so is everything not listed below)
``ReadWritePaths=``       bound writable
``StateDirectory=``       ``/var/lib/<name>`` bound writable, ``$STATE_DIRECTORY`` set
``PrivateTmp=yes``        fresh ``/tmp`` and ``/var/tmp`` (mode 1777)
``ProtectHome=yes``       empty ``/home``, ``/root`` and ``/run/user``
``PrivateDevices=yes``    a minimal ``/dev``
``User=`` / ``Group=``    ``setpriv`` to that user with no supplementary groups, no new privileges
``UMask=``                the umask the command starts with (see :func:`umask`)
(no ``WorkingDirectory=``) the working directory is ``/``, as systemd gives a system service
========================  =====================================================================

Paths outside the unit's own (a test's config file, its state directory standing in for
``/var/lib/angos``) are passed with ``binds``/``ro_binds``, bound after ``/tmp`` is replaced
so they stay visible. The network is shared: the sandboxed server listens on the host's
loopback like the real service. Needs root (bwrap mounts as the invoking user otherwise).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest


def unit_settings(path: Path) -> dict[str, list[str]]:
    """``{"Section.Key": [values...]}``; systemd allows a key more than once."""
    out: dict[str, list[str]] = {}
    section = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        out.setdefault(f"{section}.{key.strip()}", []).append(value.strip())
    return out


def interpreter_binds() -> list[Path]:
    """This Python's installation, when ``ProtectHome`` would hide it (a pyenv build under /root on
    a developer machine): bound read-only so the test's interpreter still runs. The package's own
    interpreter is Debian's /usr/bin/python3 and needs nothing."""
    base = Path(sys.base_prefix).resolve()
    return [base] if base.parts[1:2] in (("root",), ("home",)) else []


def require_bwrap() -> str:
    exe = shutil.which("bwrap")
    if exe is None:
        pytest.fail("bubblewrap is not installed (make test installs it)")
    return exe


def sandboxed(unit: Path, command: list[str], *, state_dir: Path | None = None, binds=(), ro_binds=(),
              as_user: bool = True) -> tuple[list[str], dict[str, str]]:
    """(argv, extra environment) running ``command`` inside ``unit``'s sandbox.

    ``state_dir`` replaces ``/var/lib/<StateDirectory>`` (a test's own directory standing in for
    it; None keeps the unit's). ``as_user=False`` skips ``User=`` (tests running as whoever
    started them, with no such user on the machine).
    """
    s = unit_settings(unit)
    svc = lambda key: s.get(f"Service.{key}", [])  # noqa: E731
    assert svc("ProtectSystem") == ["strict"], "only ProtectSystem=strict is modelled"
    argv = [require_bwrap(), "--die-with-parent", "--ro-bind", "/", "/", "--proc", "/proc"]
    if svc("PrivateDevices") == ["yes"]:
        argv += ["--dev", "/dev"]
    else:
        argv += ["--dev-bind", "/dev", "/dev"]
    if svc("PrivateTmp") == ["yes"]:
        # 1777 as systemd makes them: the service's user must be able to create its own files there.
        argv += ["--perms", "1777", "--tmpfs", "/tmp", "--perms", "1777", "--tmpfs", "/var/tmp"]
    if svc("ProtectHome") == ["yes"]:
        argv += ["--tmpfs", "/home", "--tmpfs", "/root", "--tmpfs", "/run/user"]
    env: dict[str, str] = {}
    writable = [Path(p) for value in svc("ReadWritePaths") for p in value.split()]
    states = [Path("/var/lib") / name for value in svc("StateDirectory") for name in value.split()]
    if states:
        if state_dir is not None:
            writable = [state_dir if p == states[0] else p for p in writable]
            states[0] = state_dir
        env["STATE_DIRECTORY"] = ":".join(str(p) for p in states)
    for path in dict.fromkeys([*writable, *states, *map(Path, binds)]):
        argv += ["--bind", str(path), str(path)]
    for path in ro_binds:
        argv += ["--ro-bind", str(path), str(path)]
    argv += ["--chdir", "/"]
    if as_user and svc("User"):
        (user,), group = svc("User"), (svc("Group") or svc("User"))[0]
        argv += [shutil.which("setpriv"), f"--reuid={user}", f"--regid={group}", "--clear-groups",
                 "--no-new-privs"]
    return argv + list(command), env


def umask(unit: Path) -> int | None:
    """The unit's ``UMask=`` (for ``subprocess.Popen(umask=...)``), None when it sets none."""
    value = unit_settings(unit).get("Service.UMask")
    return int(value[0], 8) if value else None


def exec_start(unit: Path) -> list[str]:
    """The unit's ``ExecStart=`` split into words (the units use no quoting)."""
    (line,) = unit_settings(unit)["Service.ExecStart"]
    return line.split()
