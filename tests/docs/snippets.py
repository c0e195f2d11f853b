"""Take snippets out of the documents and run them on this box.

- :func:`block` finds the one fenced block of a language whose first line
  starts with, or whose text contains, a given string (a document edit that
  loses or duplicates it fails the test loudly, instead of testing nothing).
- :func:`on_ports` moves documented ports (``8000`` ...) onto free ones, whole
  numbers only, so ``18000`` or a digest is never touched.
- :func:`oci_archive` writes an ``image.tar`` (an OCI archive, what
  ``podman save --format oci-archive`` writes) of a fresh random image.
- :func:`run_sh` runs shell lines with ``bash -eu`` and ``-o pipefail``, this
  checkout's ``angos`` first on ``PATH``.
- :class:`Server` is an ``angos server`` started with the documented ``-c``
  files in a directory of its own, stopped (and, if it does not stop, killed
  with its process group) at the end.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tarfile
from pathlib import Path

from ..conftest import ANGOS, ROOT
from ..images import single_platform_image

BIN = str(Path(sys.executable).parent)


def block(doc: str, lang: str, *, first: str | None = None, containing: str | None = None) -> str:
    """The one ```lang block of ``doc`` (a path under the checkout) matching ``first``/``containing``."""
    text = (ROOT / doc).read_text()
    found = []
    for m in re.finditer(rf"```{lang}\n(.*?)```", text, re.S):
        body = m.group(1)
        if first is not None and not body.startswith(first):
            continue
        if containing is not None and containing not in body:
            continue
        found.append(body)
    assert len(found) == 1, f"{doc}: expected one {lang} block ({first=}, {containing=}), found {len(found)}"
    return found[0]


def on_ports(text: str, ports: dict[int, int]) -> str:
    """``text`` with each documented port (a whole number) replaced by its free one."""
    for documented, free in ports.items():
        text = re.sub(rf"(?<![\w.+/$]){documented}(?![\w.+])", str(free), text)
    return text


def oci_archive(directory: Path, tag: str = "latest") -> tuple[Path, str]:
    """``directory/image.tar``: an OCI archive of a fresh image; returns (path, manifest digest)."""
    image = single_platform_image(directory / "layout", tag=tag)
    archive = directory / "image.tar"
    with tarfile.open(archive, "w") as tar:
        for entry in sorted(image.layout.iterdir()):
            tar.add(entry, arcname=entry.name)
    return archive, image.digest


def run_sh(script: str, cwd: Path, timeout: float = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    full_env = dict(os.environ, **(env or {}))
    full_env["PATH"] = BIN + os.pathsep + full_env.get("PATH", "")
    return subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=cwd, env=full_env, capture_output=True,
                          text=True, timeout=timeout)


class Server:
    """``angos -c FILE... server`` run in ``cwd`` (relative paths in the files resolve there)."""

    def __init__(self, cwd: Path, *config_files: str, name: str = "server"):
        self.cwd = cwd
        self.args = [a for f in config_files for a in ("-c", f)]
        self.log_path = cwd / f"{name}.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Server":
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(ANGOS + self.args + ["server"], cwd=self.cwd, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        return self

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, timeout: float = 30) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)  # the group this test started, nothing else
            self.proc.wait(10)
