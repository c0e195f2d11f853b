"""``scrub --replication-orphans`` / ``--cache-orphans``: jobs whose target left the config."""

from __future__ import annotations

import re

from angos.config import load_config
from angos.queue import JobQueues

from ..conftest import free_port
from .conftest import lines, push, scrub

CONFIG = """\
[server]
bind_address = "127.0.0.1"
port = @PORT@

[blob_store.fs]
root_dir = "@DATA@"

[global.job_queue]
max_attempts = 1

[global.access_policy]
default = "allow"

[repository."nginx"]
[[repository."nginx".downstream]]
name = "keep"
url = "http://127.0.0.1:{dead}"
{gone}
{old}
"""

GONE = """
[[repository."nginx".downstream]]
name = "gone"
url = "http://127.0.0.1:{dead}"
"""

OLD = """
[repository."old"]
[[repository."old".downstream]]
name = "x"
url = "http://127.0.0.1:{dead}"
"""


def _config(dead: int, gone: bool, old: bool) -> str:
    return CONFIG.format(dead=dead, gone=GONE.format(dead=dead) if gone else "",
                         old=OLD.format(dead=dead) if old else "")


def _jobs(server) -> dict[str, set[str]]:
    """state -> lock keys, read through the queue's own admin operations."""
    queue = JobQueues(load_config([str(server.config_path)]))["replication"]
    try:
        return {"pending": {j["lock_key"] for j in queue.list_pending(None, 1000)[0]},
                "failed": {j["lock_key"] for j in queue.list_failed(None, 1000)[0]}}
    finally:
        queue.close()


def _listed(out: str) -> set[tuple[str, str, str]]:
    found = set()
    for line in lines(out, "DeleteOrphanJob"):
        m = re.match(r"DeleteOrphanJob queue=replication state=(\w+) kind=\S+ repository=(\S+) target=(\S+) key=\S+$",
                     line)
        assert m, line
        found.add(m.groups())
    return found


def test_orphaned_pending_and_dead_lettered_jobs_are_listed_then_removed_and_nothing_else(angos_factory):
    dead = free_port()  # nothing listens there: every job fails at once
    server = angos_factory(config_text=_config(dead, gone=True, old=True))
    push(server, "nginx/app", "t1", "t1")
    cfg = load_config([str(server.config_path)])
    queue = JobQueues(cfg)["replication"]
    try:
        while queue.run_next() is not None:  # max_attempts = 1: both t1 jobs dead-letter
            pass
    finally:
        queue.close()
    push(server, "nginx/app", "t2", "t2")
    push(server, "old/app", "t1", "o1")
    before = _jobs(server)
    assert before == {"pending": {"sync|keep|nginx/app|t2", "sync|gone|nginx/app|t2", "sync|x|old/app|t1"},
                      "failed": {"sync|keep|nginx/app|t1", "sync|gone|nginx/app|t1"}}

    server.config_path.write_text(_config(dead, gone=False, old=False).replace("@PORT@", str(server.port))
                                  .replace("@DATA@", str(server.workdir / "data")))
    dry = scrub(server, "--replication-orphans", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert _listed(dry.stdout) == {("pending", "nginx", "gone"), ("failed", "nginx", "gone"),
                                   ("pending", "old", "x")}
    assert len(lines(dry.stdout, "DeleteOrphanJob")) == 3
    assert _jobs(server) == before

    real = scrub(server, "--replication-orphans")
    assert real.returncode == 0, real.stderr
    assert "replication-orphans: deleted=3 kept=2" in real.stdout
    assert _jobs(server) == {"pending": {"sync|keep|nginx/app|t2"}, "failed": {"sync|keep|nginx/app|t1"}}
    again = scrub(server, "--replication-orphans", "--dry-run")
    assert lines(again.stdout, "DeleteOrphanJob") == []


def test_cache_jobs_whose_repository_lost_its_upstream_are_orphans(angos_factory):
    server = angos_factory(config_text=_config(free_port(), gone=False, old=False) + """
[repository."mirror"]
[[repository."mirror".upstream]]
url = "https://registry.example"
""")
    queue = JobQueues(load_config([str(server.config_path)]))["cache"]
    try:
        queue.submit("cache.fill", "fill|mirror|a", {"repository": "mirror", "upstream": "https://registry.example"})
        queue.submit("cache.fill", "fill|mirror|b", {"repository": "mirror", "upstream": "https://elsewhere.example"})
        queue.submit("cache.fill", "fill|nginx|c", {"repository": "nginx"})  # no upstream configured
        queue.submit("cache.fill", "fill|none|d", {"namespace": "x"})        # names no repository: untouched
        real = scrub(server, "--cache-orphans")
        assert real.returncode == 0, real.stderr
        assert "cache-orphans: deleted=2 kept=2" in real.stdout
        assert {j["lock_key"] for j in queue.list_pending(None, 100)[0]} == {"fill|mirror|a", "fill|none|d"}
    finally:
        queue.close()
