"""One data directory, one configuration: the instance check of ``angos server``.

Servers on one filesystem data directory share its job queue (``<root>/_jobs``):
a job queued by one is run by whichever server's drain takes it first, and a
server whose configuration lacks the job's repository or downstream
dead-letters it as "no longer configured". So ``angos server`` with a
filesystem metadata store, at start-up:

- holds a shared ``flock`` on ``_jobs/instance.lock`` for as long as it runs
  (its forked workers inherit it, so the lock goes when the last of them does);
- keeps in ``_jobs/instance.json`` a fingerprint of what the queue's jobs
  depend on: the repository keys with their downstreams (name, URL, mode,
  namespace filter) and upstreams (URL), plus who wrote it;
- refuses to start, with one line naming the other server, when another
  server holds the lock and the fingerprint it recorded is not ours.

A restart with a changed configuration starts normally (nobody else holds the
lock, so the record is simply rewritten), and a live reload rewrites the record
(:meth:`Claim.update`) instead of refusing. ``[global] shared_data_directory =
true`` skips all of it, for servers that share a directory on purpose with
configurations that differ; servers whose fingerprints agree (same
repositories, downstreams and upstreams) may share one without it. The lock is
host-local: servers on several hosts sharing a network file system, or an S3
metadata store (no directory: nothing is checked), coordinate through their
configuration, as docs/scale-out.md describes.

Both files are written under an exclusive ``flock`` on the record itself, so
two servers starting at the same moment cannot both believe they are alone.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import time

from .oci.errors import AngosError

LOCK = "instance.lock"
RECORD = "instance.json"


def fingerprint(cfg) -> str:
    """A hash of the configuration parts the job queue depends on."""
    repos = {}
    for key, repo in sorted(cfg.repository.items()):
        repos[key] = {
            "downstream": [[ds.name, ds.url, ds.mode, list(ds.namespace_filter)] for ds in repo.downstream],
            "upstream": [up.url for up in repo.upstream],
        }
    return hashlib.sha256(json.dumps(repos, sort_keys=True).encode()).hexdigest()


class Claim:
    """This server's hold on a data directory (keep it referenced while the server runs)."""

    def __init__(self, directory: str, lock_fd: int, describe: dict):
        self.directory = directory
        self.lock_fd = lock_fd
        self.describe = describe

    def update(self, cfg) -> None:
        """Record ``cfg``'s fingerprint (a reload changed the configuration: never a refusal)."""
        with _record(self.directory) as fh:
            _write(fh, fingerprint(cfg), self.describe)


def claim(cfg, config_paths=()) -> Claim | None:
    """Take the data directory for this server, or raise AngosError (one line) when another server with a
    different configuration runs on it. None when there is nothing to check."""
    if cfg.global_.shared_data_directory or cfg.metadata.fs is None:
        return None
    from .queue.layout import make_jobs_dir

    directory = make_jobs_dir(cfg)
    mine = fingerprint(cfg)
    describe = {"pid": os.getpid(), "instance_name": cfg.global_.instance_name,
                "listen": f"{cfg.server.bind_address}:{cfg.server.port}",
                "config": [os.path.abspath(p) for p in config_paths]}
    try:
        lock_fd = os.open(os.path.join(directory, LOCK), os.O_RDWR | os.O_CREAT, 0o640)
    except OSError as exc:
        raise AngosError(f"cannot open {os.path.join(directory, LOCK)} ({exc.strerror})") from None
    try:
        with _record(directory) as fh:
            try:
                fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                alone = True
            except BlockingIOError:
                alone = False
            if not alone:
                theirs = _read(fh)
                if theirs.get("fingerprint") != mine:
                    raise AngosError(_refusal(cfg, theirs))
            _write(fh, mine, describe)
            # Shared from now on: a second server with this same configuration may join.
            fcntl.flock(lock_fd, fcntl.LOCK_SH)
    except BaseException:
        os.close(lock_fd)
        raise
    return Claim(directory, lock_fd, describe)


def _refusal(cfg, theirs: dict) -> str:
    who = ", ".join(str(x) for x in (f"pid {theirs.get('pid', '?')}", theirs.get("listen"),
                                     " ".join(theirs.get("config") or ())) if x)
    return (f"another angos server ({who}) runs on the data directory {cfg.metadata.fs.root_dir} with other "
            f"repositories, downstreams or upstreams; the two would share one job queue and dead-letter each "
            f"other's jobs. Stop it, give this server its own root_dir, or set [global] shared_data_directory = "
            f"true in both if they share it on purpose")


class _record:
    """The record file opened and exclusively locked (the guard of every read and write)."""

    def __init__(self, directory: str):
        self.path = os.path.join(directory, RECORD)

    def __enter__(self):
        try:
            self.fh = open(self.path, "a+", encoding="utf-8")
        except OSError as exc:
            raise AngosError(f"cannot open {self.path} ({exc.strerror})") from None
        fcntl.flock(self.fh.fileno(), fcntl.LOCK_EX)
        return self.fh

    def __exit__(self, *exc):
        self.fh.close()  # releases the lock


def _read(fh) -> dict:
    fh.seek(0)
    try:
        data = json.loads(fh.read() or "{}")
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _write(fh, fp: str, describe: dict) -> None:
    fh.seek(0)
    fh.truncate()
    fh.write(json.dumps({"fingerprint": fp, **describe, "written_at": time.time()}) + "\n")
    fh.flush()
