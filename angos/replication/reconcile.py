"""Reconciliation (``angos scrub --replicate`` / ``angos replicate``).

For every repository with downstreams, every downstream whose mode includes
reconcile, and every local namespace of the repository that the downstream's
``namespace_filter`` admits: HEAD each local tag on the downstream (bounded
concurrency). A tag that is missing there or points at another digest gets a
replication *push* through the same queue and handler as the event path. With
``prune = true`` the downstream's tag list (following ``Link`` pages) is read
too, and each tag it has but this instance does not gets a *delete* stamped
with the reconcile time. Nothing is ever deleted otherwise.

``--dry-run`` prints one line per action, sorted, and enqueues nothing::

    EnqueueReplicationPush downstream=<name> namespace=<remote ns> tag=<tag>
    EnqueueReplicationDelete downstream=<name> namespace=<remote ns> tag=<tag>

Without it the actions are enqueued (already-pending keys coalesce) and then
the jobs it enqueued are drained before the command exits, with
``max_concurrent_replication_jobs`` jobs at a time, whether or not a worker
also runs. A probe that fails (auth, 5xx, timeout) is logged at warning,
counted ``skipped``, and the run continues; the exit code is 1 when anything
was skipped or failed to enqueue.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from .. import metrics as m
from ..oci.digest import Digest
from ..registry.timestamps import format_ts, now
from .client import ClientError, DownstreamClient
from .jobs import DeleteJob, PushJob
from .mapping import is_self_loop, matches_filter, remote_namespace

log = logging.getLogger("angos.replication.reconcile")

PROBE_CONCURRENCY = 16
_FALLBACK_TAG = re.compile(r"^(sha256|sha512)-([a-f0-9]{64})$")


@dataclass(frozen=True)
class Action:
    op: str                 # "push" or "delete"
    order: int              # downstream position in the config, for a stable listing
    repository: str
    downstream: str
    namespace: str          # local namespace
    remote: str             # namespace on the downstream
    tag: str

    def line(self) -> str:
        verb = "EnqueueReplicationPush" if self.op == "push" else "EnqueueReplicationDelete"
        return f"{verb} downstream={self.downstream} namespace={self.remote} tag={self.tag}"

    def job(self, stamp: str):
        if self.op == "push":
            return PushJob(self.repository, self.downstream, self.namespace, self.tag)
        return DeleteJob(self.repository, self.downstream, self.namespace, self.tag, stamp)


@dataclass
class Report:
    namespaces: int = 0
    checked: int = 0
    enqueued: int = 0
    coalesced: int = 0      # asked for, but an identical job was already pending
    skipped: int = 0
    failed: int = 0
    actions: list[Action] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)

    def summary(self) -> str:
        return (f"replicate: namespaces={self.namespaces} tags_checked={self.checked} enqueued={self.enqueued} "
                f"coalesced={self.coalesced} skipped={self.skipped} failed={self.failed} elapsed={time.monotonic() - self.started:.1f}s")


class _Progress:
    """Probe progress: a live counter on a terminal, nothing otherwise (the summary says it all)."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stderr
        self.live = self.stream.isatty()
        self.done = 0
        self.total = 0
        self._lock = threading.Lock()

    def add(self, n: int) -> None:
        with self._lock:
            self.total += n

    def tick(self) -> None:
        with self._lock:
            self.done += 1
            if self.live:
                self.stream.write(f"\rreplicate: probed {self.done}/{self.total} tags")
                self.stream.flush()

    def close(self) -> None:
        if self.live and self.total:
            self.stream.write("\n")


def plan(cfg, registry, report: Report, progress: _Progress | None = None) -> list[Action]:
    """Probe every downstream and return the actions that would converge it."""
    progress = progress or _Progress()
    clients: dict = {}
    namespaces_seen = set()
    catalog = registry.catalog.namespaces()
    work = []  # (action template fields, local tag -> digest)
    for repo_key, repo in cfg.repository.items():
        members = [ns for ns in catalog if ns == repo_key or ns.startswith(repo_key + "/")]
        for order, ds in enumerate(repo.downstream):
            if not ds.reconcile:
                continue
            for ns in members:
                if not matches_filter(ns, ds.namespace_filter):
                    continue
                target = remote_namespace(repo_key, ns, ds.url)
                if is_self_loop(target, ns, cfg.server.bind_address, cfg.server.port):
                    continue
                key = (target.base_url, ds)
                if key not in clients:  # one pooled client (and token cache) per downstream
                    clients[key] = DownstreamClient(target.base_url, ds)
                client = clients[key]
                tags = {}
                for tag in registry.manifests.list_tags(ns):
                    rec = registry.manifests.tag_record(ns, tag)
                    if rec is not None:
                        tags[tag] = rec.digest
                namespaces_seen.add(ns)
                work.append((repo_key, order, ds, ns, target.namespace, client, tags))
    report.namespaces = len(namespaces_seen)

    actions: list[Action] = []
    lock = threading.Lock()

    def record(action: Action) -> None:
        with lock:
            actions.append(action)

    def probe(item, tag: str, digest: str) -> None:
        repo_key, order, ds, ns, remote, client, _ = item
        try:
            resp = client.head_manifest(remote, tag)
            status = resp.status_code
            if status == 200 and resp.headers.get("Docker-Content-Digest") == digest:
                return
            if status in (200, 404):
                record(Action("push", order, repo_key, ds.name, ns, remote, tag))
                return
            raise ClientError(f"HEAD {remote}:{tag} answered {status}")
        except ClientError as exc:
            _skip(report, lock, ds.name, remote, tag, exc)
        finally:
            with lock:
                report.checked += 1
            progress.tick()

    for item in work:
        progress.add(len(item[6]))
    with ThreadPoolExecutor(max_workers=PROBE_CONCURRENCY, thread_name_prefix="angos-probe") as pool:
        futures = [pool.submit(probe, item, tag, digest) for item in work for tag, digest in item[6].items()]
        for item in work:
            repo_key, order, ds, ns, remote, client, tags = item
            if ds.prune:
                futures.append(pool.submit(_prune, item, registry, report, lock, record))
        for f in futures:
            f.result()
    progress.close()
    actions.sort(key=lambda a: (a.repository, a.order, a.remote, a.op != "push", a.tag))
    return actions


def _skip(report: Report, lock, downstream: str, remote: str, tag: str | None, exc: Exception) -> None:
    with lock:
        report.skipped += 1
    m.REPLICATION_RECONCILE.labels("skipped").inc()
    what = f"{remote}:{tag}" if tag else remote
    log.warning("reconcile probe skipped: downstream=%s %s: %s", downstream, what, exc)


def _prune(item, registry, report: Report, lock, record) -> None:
    repo_key, order, ds, ns, remote, client, tags = item
    try:
        remote_tags = client.list_tags(remote)
    except ClientError as exc:
        _skip(report, lock, ds.name, remote, None, exc)
        return
    for tag in remote_tags:
        if tag in tags:
            continue
        m_ = _FALLBACK_TAG.match(tag)
        if m_ and registry.manifests.has_revision(ns, Digest.parse(f"{m_.group(1)}:{m_.group(2)}")):
            continue  # the referrers fallback index replication maintains for a local subject
        record(Action("delete", order, repo_key, ds.name, ns, remote, tag))


def run(cfg, dry_run: bool, out=print) -> int:
    """The whole command: plan, print or enqueue, drain, summarise. Returns the exit code."""
    from ..queue import JobQueues
    from ..registry import build_registry

    report = Report()
    registry = build_registry(cfg)
    actions = plan(cfg, registry, report)
    if dry_run:
        for a in actions:
            out(a.line())
    else:
        queue = JobQueues(cfg)["replication"]
        stamp = format_ts(now())
        keys = set()
        for a in actions:
            job = a.job(stamp)
            try:
                created = queue.submit(job.kind, job.lock_key, job.payload())
            except Exception as exc:  # noqa: BLE001 - count, log, carry on with the rest
                report.failed += 1
                m.REPLICATION_RECONCILE.labels("failed").inc()
                log.error("enqueue failed for %s: %s", a.line(), exc)
                continue
            keys.add(job.lock_key)
            if created:
                report.enqueued += 1
            else:
                report.coalesced += 1
            m.REPLICATION_RECONCILE.labels("enqueued").inc()
            log.info("%s", a.line())
        if keys:
            drain(cfg, queue, keys)
    out(report.summary())
    return 1 if report.skipped or report.failed else 0


def drain(cfg, queue, keys: set[str], timeout: float = 3600.0) -> None:
    """Run replication jobs until none of ``keys`` is pending or running (or ``timeout``)."""
    from . import tasks  # noqa: F401  (imported for its side effect: registers the job kinds)

    workers = cfg.global_.max_concurrent_replication_jobs
    deadline = time.monotonic() + timeout

    def outstanding() -> bool:
        after, live = None, set()
        while True:
            page, after = queue.list_pending(after, 1000)
            live.update(j["lock_key"] for j in page)
            if not after:
                break
        live.update(env.lock_key for env, _, _ in queue.store.running())
        return bool(live & keys)

    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            if queue.run_next() is None:
                stop.wait(0.05)

    threads = [threading.Thread(target=loop, name=f"angos-drain-{i}", daemon=True) for i in range(workers)]
    for t in threads:
        t.start()
    try:
        beat = time.monotonic()
        while outstanding() and time.monotonic() < deadline:
            time.sleep(0.1)
            if time.monotonic() - beat > queue.lease_secs / 3:
                queue.heartbeat()  # keep the leases of long pushes (another worker would reclaim them)
                beat = time.monotonic()
    finally:
        stop.set()
        for t in threads:
            t.join()
