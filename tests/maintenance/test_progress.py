"""Progress: a live per-phase counter when stderr is a terminal; otherwise plain output and a log line
every thousand items."""

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


def test_without_a_terminal_progress_goes_to_the_log_every_thousand_items(angos_factory):
    server = angos_factory()
    push(server, "nginx/many", "t0", "many")
    # 2,500 tags of one manifest: written beside the pushed one's record (as the store keeps them),
    # since pushing them one by one would take most of a minute.
    tags = server.workdir / "data" / "repositories" / "nginx" / "many" / "_manifests" / "tags"
    record = (tags / "t0").read_bytes()
    for i in range(1, 2500):
        (tags / f"t{i}").write_bytes(record)
    run = scrub(server, "--tags")  # stderr is a pipe here, not a terminal
    assert run.returncode == 0, run.stderr
    assert "\r" not in run.stderr
    progress = [line.split("INFO ", 1)[1] for line in run.stderr.splitlines() if " examined" in line]
    assert progress == ["angos.maintenance.tags: tags: 1000 tags examined",
                        "angos.maintenance.tags: tags: 2000 tags examined"], run.stderr
    assert run.stdout.startswith("tags: removed=0 ok=2500")
