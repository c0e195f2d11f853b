"""Progress: a live per-phase counter when stderr is a terminal, none when it is not."""

from __future__ import annotations

import os
import pty
import subprocess
import sys

from ..conftest import ROOT
from .conftest import push, scrub


def test_live_counter_on_a_terminal_and_plain_output_otherwise(angos_factory):
    server = angos_factory()
    for tag in ("a", "b", "c"):
        push(server, "nginx/app", tag, tag)
    master, slave = pty.openpty()
    try:
        run = subprocess.run([sys.executable, "-m", "angos.cli", "-c", str(server.config_path), "scrub", "--tags"],
                             cwd=server.workdir, stdout=subprocess.PIPE, stderr=slave, text=True, timeout=120,
                             env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
        os.close(slave)
        shown = b""
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: the terminal's other side is closed and drained
                break
            if not chunk:
                break
            shown += chunk
    finally:
        os.close(master)
    assert run.returncode == 0
    assert b"\rtags: 3 tags examined" in shown
    assert run.stdout.startswith("tags: removed=0 ok=3")

    plain = scrub(server, "--tags")
    assert "\r" not in plain.stderr and "\r" not in plain.stdout
    assert plain.stdout.startswith("tags: removed=0 ok=3")
