"""Reconciliation (``angos scrub --replicate`` / ``angos replicate``).

For every repository with downstreams, every downstream whose mode includes
reconcile, and every local namespace of the repository that the downstream's
``namespace_filter`` admits, compare each local tag *and tombstone* with the
downstream (bounded concurrency) and enqueue a sync job for each that differs,
through the same queue and handler as the event path:

- **Angos downstreams** answer ``GET /_ext/<namespace>/_tags`` with every
  tag's digest and author time and every tombstone, so the comparison is
  last-writer-wins, the rule the receivers apply, and safe both ways: a local
  tag is pushed only when it is newer than the downstream's state (a tag the
  downstream deleted later is not pushed back), and a local tombstone newer
  than the downstream's tag is sent as a delete (without ``prune``).
- **Other registries** (the listing answers anything but 200): each local tag
  is probed with ``HEAD`` and pushed when missing or different; each local
  tombstone whose tag still exists there is sent as a delete.
- ``prune = true`` also deletes tags the downstream has and this instance
  neither has nor remembers deleting (``list-tags``, following ``Link``).
- For downstreams without the referrers API, each local subject's OCI 1.0
  fallback index is compared with the local referrers and rebuilt when it
  differs.

An Angos downstream that serves a change feed is compared only on the tags
that changed on either side since the last clean run
(:mod:`.reconcile_feed` decides which, per downstream, and keeps the
cursors); ``--full`` compares everything. The comparison itself is the same.

``--dry-run`` prints one line per action, sorted, and enqueues nothing::

    EnqueueReplicationPush downstream=<name> namespace=<remote ns> tag=<tag>
    EnqueueReplicationDelete downstream=<name> namespace=<remote ns> tag=<tag>
    EnqueueReplicationReferrers downstream=<name> namespace=<remote ns> subject=<digest>

Without it the actions are enqueued (already-pending keys coalesce), dead
letters of keys found in sync are cleared, and the command waits until its
jobs are done, showing progress. A server or worker that drains the queue
runs them (and counts them on its ``/metrics``); when none has claimed any of
them within :data:`HANDOVER_SECS`, the command drains them itself with
``max_concurrent_replication_jobs`` threads. A probe that fails (auth, 5xx,
timeout) is logged at warning, counted ``skipped``, and the run continues;
the exit code is 1 when anything was skipped or failed to enqueue.
Every run that is not a dry run leaves its outcome in a small record on the
metadata store, which the server publishes on its ``/metrics`` (:mod:`.runs`).
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
from ..registry.tags import local_wins
from ..registry.timestamps import format_ts, now, parse_ts
from .client import ClientError, DownstreamClient
from .jobs import ReferrersJob, SyncJob
from .mapping import is_self_loop, matches_filter, remote_namespace
from .pipeline import Pipeline, ReplicationFailed
from .reconcile_feed import FeedPlanner, named_states

log = logging.getLogger("angos.replication.reconcile")

PROBE_CONCURRENCY = 16
HANDOVER_SECS = 2.0
STALL_SECS = 120.0
_FALLBACK_TAG = re.compile(r"^(sha256|sha512)-([a-f0-9]{64}|[a-f0-9]{128})$")
_VERBS = {"push": "EnqueueReplicationPush", "delete": "EnqueueReplicationDelete",
          "referrers": "EnqueueReplicationReferrers"}


@dataclass(frozen=True)
class Action:
    op: str                 # "push", "delete" or "referrers"
    order: int              # downstream position in the config, for a stable listing
    repository: str
    downstream: str
    namespace: str          # local namespace
    remote: str             # namespace on the downstream
    tag: str                # the tag, or the subject digest for "referrers"

    def line(self) -> str:
        what = "subject" if self.op == "referrers" else "tag"
        return f"{_VERBS[self.op]} downstream={self.downstream} namespace={self.remote} {what}={self.tag}"

    prune: bool = False     # a delete of a downstream-only tag (prune = true)

    def job(self, stamp: str):
        if self.op == "referrers":
            return ReferrersJob(self.repository, self.downstream, self.namespace, self.tag)
        return SyncJob(self.repository, self.downstream, self.namespace, self.tag, stamp if self.prune else None)


@dataclass
class Report:
    namespaces: int = 0
    checked: int = 0
    enqueued: int = 0
    coalesced: int = 0      # asked for, but an identical job was already pending
    skipped: int = 0
    failed: int = 0
    waiting: int = 0        # jobs still queued when the command stopped waiting (a downstream down)
    by_feed: int = 0        # downstreams compared on their change feeds' tags only
    in_full: int = 0        # downstreams compared tag by tag
    troubled: set = field(default_factory=set)  # (repository, downstream) with a skip, failure or job left
    actions: list[Action] = field(default_factory=list)
    in_sync: set = field(default_factory=set)   # lock keys found in sync (their dead letters are moot)
    started: float = field(default_factory=time.monotonic)

    def summary(self) -> str:
        return (f"replicate: namespaces={self.namespaces} tags_checked={self.checked} enqueued={self.enqueued} "
                f"coalesced={self.coalesced} skipped={self.skipped} failed={self.failed} waiting={self.waiting} "
                f"by_feed={self.by_feed} in_full={self.in_full} elapsed={time.monotonic() - self.started:.1f}s")


class _Progress:
    """Probe progress: a live counter on a terminal, otherwise a log line every thousand tags
    (as every scrub phase does)."""

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
            elif self.done % 1000 == 0:
                log.info("replicate: probed %d/%d tags", self.done, self.total)

    def close(self) -> None:
        if self.live and self.total:
            self.stream.write("\n")


@dataclass
class _Item:
    repository: str
    order: int
    ds: object
    namespace: str
    remote: str
    client: DownstreamClient
    target: object
    tags: dict          # local tag -> TagRecord
    tombstones: dict    # local tag -> Tombstone (within the horizon)
    changed: tuple | None = None    # only these tags (named by the change feeds); None: every tag

    @property
    def pair(self) -> tuple[str, str]:
        return self.repository, self.ds.name

    def action(self, op: str, tag: str, prune: bool = False) -> Action:
        return Action(op, self.order, self.repository, self.ds.name, self.namespace, self.remote, tag, prune)

    def key(self, tag: str) -> str:
        return SyncJob(self.repository, self.ds.name, self.namespace, tag).lock_key


def _local_state(cfg, registry, ns: str, names=None) -> tuple[dict, dict]:
    """Tag records and tombstones (within the horizon) of ``ns``: every one, or those of ``names``."""
    manifests = registry.manifests
    tags = {}
    for tag in manifests.tags.names(ns) if names is None else names:
        rec = manifests.tags.get(ns, tag)
        if rec is not None:
            tags[tag] = rec
    horizon = time.time() - cfg.global_.replication.tombstone_horizon
    tombs = {}
    for tag in manifests.tombstones.tag_names(ns) if names is None else names:
        tomb = manifests.tombstones.tag(ns, tag)
        if tomb is not None and tag not in tags and tomb.deleted is not None and tomb.deleted.timestamp() >= horizon:
            tombs[tag] = tomb
    return tags, tombs


def plan(cfg, registry, report: Report, progress: _Progress | None = None, feeds=None) -> list[Action]:
    """Probe every downstream and return the actions that would converge it. ``feeds`` (a
    :class:`~.reconcile_feed.FeedPlanner`) narrows an Angos downstream to the tags its change
    feeds name; without it, or when it declines, every tag is compared."""
    progress = progress or _Progress()
    clients: dict = {}
    namespaces_seen = set()
    catalog = registry.catalog.namespaces()
    work: list[_Item] = []
    for repo_key, repo in cfg.repository.items():
        members = [ns for ns in catalog if ns == repo_key or ns.startswith(repo_key + "/")]
        for order, ds in enumerate(repo.downstream):
            if not ds.reconcile:
                continue
            targets = {}
            for ns in members:
                if not matches_filter(ns, ds.namespace_filter):
                    continue
                target = remote_namespace(repo_key, ns, ds.url)
                if not is_self_loop(target, ns, cfg.server.bind_address, cfg.server.port):
                    targets[ns] = target
            if not targets:
                continue
            base_url = next(iter(targets.values())).base_url
            if (base_url, ds) not in clients:  # one pooled client (and token cache) per downstream
                clients[(base_url, ds)] = DownstreamClient(base_url, ds)
            client = clients[(base_url, ds)]
            changed = feeds.changes(repo_key, ds, client, targets) if feeds is not None else None
            if changed is None:
                report.in_full += 1
            else:
                report.by_feed += 1
            for ns, target in targets.items():
                names = None if changed is None else changed.get(ns)
                if changed is not None and not names:
                    continue  # nothing changed in this namespace on either side
                tags, tombs = _local_state(cfg, registry, ns, names)
                namespaces_seen.add(ns)
                work.append(_Item(repo_key, order, ds, ns, target.namespace, client, target, tags, tombs,
                                  None if names is None else tuple(sorted(names))))
    report.namespaces = len(namespaces_seen)

    actions: dict[tuple, Action] = {}
    lock = threading.Lock()

    def record(action: Action) -> None:
        with lock:
            actions.setdefault((action.downstream, action.remote, action.op, action.tag), action)

    def in_sync(item: _Item, tag: str) -> None:
        with lock:
            report.in_sync.add(item.key(tag))

    def checked(n: int = 1) -> None:
        with lock:
            report.checked += n
        for _ in range(n):
            progress.tick()

    def reconcile_namespace(item: _Item) -> None:
        remote = _remote_states(item)
        if remote is None:
            with ThreadPoolExecutor(max_workers=PROBE_CONCURRENCY, thread_name_prefix="angos-probe") as pool:
                futures = [pool.submit(probe_tag, item, tag, rec.digest) for tag, rec in item.tags.items()]
                futures += [pool.submit(probe_tombstone, item, tag) for tag in item.tombstones]
                for f in futures:
                    f.result()
        else:
            for tag, rec in item.tags.items():
                _compare_tag(item, tag, rec, remote.get(tag), record, in_sync)
            for tag, tomb in item.tombstones.items():
                state = remote.get(tag)
                created = parse_ts(state.get("created_at")) if state and "digest" in state else None
                if created is not None and tomb.deleted is not None and tomb.deleted >= created:
                    record(item.action("delete", tag))
                else:
                    in_sync(item, tag)
            checked(len(item.tags) + len(item.tombstones))
        if item.ds.prune:
            _prune(item, registry, report, lock, record, None if remote is None else
                   [t for t, st in remote.items() if "digest" in st])
        if item.changed is None:  # Angos peers (the feed path) serve the referrers API: no fallback tags
            _reconcile_fallbacks(item, registry, report, lock, record)

    def probe_tag(item: _Item, tag: str, digest: str) -> None:
        try:
            resp = item.client.head_manifest(item.remote, tag)
            status = resp.status_code
            if status == 200 and resp.headers.get("Docker-Content-Digest") == digest:
                in_sync(item, tag)
                return
            if status in (200, 404):
                record(item.action("push", tag))
                return
            raise ClientError(f"HEAD {item.remote}:{tag} answered {status}")
        except ClientError as exc:
            _skip(report, lock, item, tag, exc)
        finally:
            checked()

    def probe_tombstone(item: _Item, tag: str) -> None:
        try:
            resp = item.client.head_manifest(item.remote, tag)
            if resp.status_code == 200:
                record(item.action("delete", tag))
            elif resp.status_code == 404:
                in_sync(item, tag)
            else:
                raise ClientError(f"HEAD {item.remote}:{tag} answered {resp.status_code}")
        except ClientError as exc:
            _skip(report, lock, item, tag, exc)
        finally:
            checked()

    for item in work:
        progress.add(len(item.tags) + len(item.tombstones))
    with ThreadPoolExecutor(max_workers=PROBE_CONCURRENCY, thread_name_prefix="angos-reconcile") as pool:
        for f in [pool.submit(reconcile_namespace, item) for item in work]:
            f.result()
    progress.close()
    out = sorted(actions.values(), key=lambda a: (a.repository, a.order, a.remote, list(_VERBS).index(a.op), a.tag))
    report.actions = out
    return out


def _remote_states(item: _Item) -> dict[str, dict] | None:
    """The downstream's tag states (an Angos peer), or None when it does not list them: only those
    of ``item.changed`` when set (asked by name, or the whole listing if that fails)."""
    if item.changed is not None:
        named = named_states(item)
        if named is not None:
            return named
    states: dict[str, dict] = {}
    url = f"{item.target.base_url}/_ext/{item.remote}/_tags?n=1000"
    try:
        for resp in item.client.pages(url, item.client.scope(item.remote, "pull")):
            if resp.status_code != 200:
                return None
            try:
                for e in resp.json().get("tags"):
                    states[e["name"]] = e
            except (ValueError, AttributeError, TypeError, KeyError, RecursionError):
                return None  # not an Angos listing after all
    except ClientError as exc:
        log.debug("tag states of %s on %s unavailable (%s): probing each tag", item.remote, item.ds.name, exc)
        return None
    return states


def _compare_tag(item: _Item, tag: str, rec, state: dict | None, record, in_sync) -> None:
    if state is None:
        record(item.action("push", tag))
        return
    if state.get("digest") == rec.digest:
        in_sync(item, tag)
        return
    created = rec.created
    if "digest" in state:
        theirs = parse_ts(state.get("created_at"))
        from ..registry.tags import TagRecord

        remote_newer = theirs is not None and created is not None and local_wins(
            TagRecord(state["digest"], state["created_at"]), created, rec.digest)
    else:
        deleted = parse_ts(state.get("deleted_at"))
        remote_newer = deleted is not None and created is not None and deleted >= created
    if remote_newer:
        in_sync(item, tag)  # the downstream holds a later write; its own replication brings it here
    else:
        record(item.action("push", tag))


def _skip(report: Report, lock, item: _Item, tag: str | None, exc: Exception) -> None:
    with lock:
        report.skipped += 1
        report.troubled.add(item.pair)
    m.REPLICATION_RECONCILE.labels("skipped").inc()
    what = f"{item.remote}:{tag}" if tag else item.remote
    log.warning("reconcile probe skipped: downstream=%s %s: %s", item.ds.name, what, exc)


def _prune(item: _Item, registry, report: Report, lock, record, remote_tags: list[str] | None) -> None:
    if remote_tags is None:
        try:
            remote_tags = item.client.list_tags(item.remote)
        except ClientError as exc:
            _skip(report, lock, item, None, exc)
            return
    if item.changed is not None:  # the feed path: only the tags it names, never the rest of the listing
        named = set(item.changed)
        remote_tags = [t for t in remote_tags if t in named]
    for tag in remote_tags:
        if tag in item.tags:
            continue
        m_ = _FALLBACK_TAG.fullmatch(tag)
        if m_ and registry.manifests.has_revision(item.namespace, Digest.parse(f"{m_.group(1)}:{m_.group(2)}")):
            continue  # the referrers fallback index replication maintains for a local subject
        record(item.action("delete", tag, prune=tag not in item.tombstones))


def _reconcile_fallbacks(item: _Item, registry, report: Report, lock, record) -> None:
    """Compare each local subject's fallback index on a downstream without the referrers API."""
    subjects = registry.referrers.subjects(item.namespace)
    if not subjects:
        return
    pipeline = Pipeline(registry, item.client, item.ds, item.repository, item.namespace, item.target)
    for subject in subjects:
        try:
            current = pipeline.remote_fallback(subject)
        except (ClientError, ReplicationFailed) as exc:
            _skip(report, lock, item, str(subject), exc)
            return
        if current is None:
            return  # the downstream serves the referrers API: no fallback tags to keep
        if current != pipeline.expected_fallback(subject):
            record(item.action("referrers", str(subject)))


def run(cfg, dry_run: bool, out=print, full: bool = False) -> int:
    """The whole command: plan, print or enqueue, wait for the jobs, summarise. Returns the exit code.
    ``full`` compares every tag even where the change feeds could narrow it down."""
    from ..queue import JobQueues
    from ..registry import build_registry

    report = Report()
    registry = build_registry(cfg)
    feeds = FeedPlanner(cfg, registry, full=full, dry_run=dry_run)  # first: it takes the cursors
    if dry_run:
        for a in plan(cfg, registry, report, feeds=feeds):
            out(a.line())
        out(report.summary())
        return 1 if report.skipped or report.failed else 0
    rc = 1  # what a run that raises counts as
    try:
        rc = _run(cfg, registry, report, JobQueues, out, feeds)
    finally:
        _record_run(registry, rc, report)
    return rc


def _record_run(registry, rc: int, report: Report) -> None:
    """Leave the run's outcome where the server's /metrics can see it (:mod:`.runs`)."""
    from . import runs

    try:
        runs.record(registry, rc, {"tags_checked": report.checked, "enqueued": report.enqueued,
                                   "coalesced": report.coalesced, "skipped": report.skipped,
                                   "failed": report.failed, "waiting": report.waiting})
    except Exception:  # noqa: BLE001 - the run's own exit code still tells cron and systemd
        log.error("could not record this reconcile run for the server's metrics", exc_info=True)


def _run(cfg, registry, report: Report, queues, out, feeds) -> int:
    actions = plan(cfg, registry, report, feeds=feeds)
    queue = queues(cfg)["replication"]
    stamp = format_ts(now())
    keys: dict[str, tuple[str, str]] = {}   # lock key -> (repository, downstream)
    for a in actions:
        job = a.job(stamp)
        try:
            created = queue.submit(job.kind, job.lock_key, job.payload())
        except Exception as exc:  # noqa: BLE001 - count, log, carry on with the rest
            report.failed += 1
            report.troubled.add((a.repository, a.downstream))
            m.REPLICATION_RECONCILE.labels("failed").inc()
            log.error("enqueue failed for %s: %s", a.line(), exc)
            continue
        keys[job.lock_key] = (a.repository, a.downstream)
        if created:
            report.enqueued += 1
        else:
            report.coalesced += 1
        m.REPLICATION_RECONCILE.labels("enqueued").inc()
        log.info("%s", a.line())
    try:
        queue.clear_failed(report.in_sync)
    except Exception:  # noqa: BLE001 - stale dead letters are cosmetic; never fail the run for them
        log.warning("could not clear the dead letters of keys in sync", exc_info=True)
    if keys:
        report.waiting = wait(cfg, queue, set(keys))
        try:
            report.troubled.update(keys[k] for k in _unsettled(queue, set(keys)))
        except Exception:  # noqa: BLE001 - not knowing how the jobs ended: keep every cursor
            log.warning("could not read back how the jobs ended; the cursors stay", exc_info=True)
            report.troubled.update(keys.values())
    feeds.commit(report.troubled)
    out(report.summary())
    return 1 if report.skipped or report.failed or report.waiting else 0


def _unsettled(queue, keys: set[str]) -> set[str]:
    """Keys of ours still queued or running, or dead-lettered: what the next run must look at again."""
    left, _ = _outstanding(queue, keys)
    after = None
    while True:
        page, after = queue.list_failed(after, 1000)
        left.update(j["lock_key"] for j in page if j["lock_key"] in keys)
        if not after:
            return left


def _outstanding(queue, keys: set[str]) -> tuple[set[str], set[str]]:
    """(keys of ours still pending or running, keys of ours running under another owner)."""
    after, live = None, set()
    while True:
        page, after = queue.list_pending(after, 1000)
        live.update(j["lock_key"] for j in page)
        if not after:
            break
    elsewhere = set()
    for env, owner, _ in queue.store.running():
        live.add(env.lock_key)
        if owner != queue.owner:
            elsewhere.add(env.lock_key)
    return live & keys, elsewhere & keys


def wait(cfg, queue, keys: set[str], timeout: float = 3600.0, stream=None, stall: float = STALL_SECS) -> int:
    """Wait until none of ``keys`` is pending or running, showing progress; returns how many are left.

    The queue's own drain (the server's or a worker) runs them when it claims one within
    :data:`HANDOVER_SECS`; otherwise this process drains them itself. It stops waiting after
    ``timeout``, or after ``stall`` seconds in which none finished (a downstream that is down:
    its jobs stay queued and run when it returns)."""
    from . import tasks  # noqa: F401  (imported for its side effect: registers the job kinds)

    stream = stream or sys.stderr
    live = stream.isatty()
    deadline = time.monotonic() + timeout
    started = time.monotonic()
    stop = threading.Event()
    threads: list[threading.Thread] = []
    left, elsewhere = _outstanding(queue, keys)
    seen_elsewhere = bool(elsewhere) or len(left) < len(keys)
    shown = (None, 0.0)
    progress_at, progress_n = time.monotonic(), len(left)
    try:
        beat = time.monotonic()
        while left and time.monotonic() < deadline:
            if len(left) < progress_n:
                progress_at, progress_n = time.monotonic(), len(left)
            elif time.monotonic() - progress_at > stall:
                log.warning("replicate: %d job(s) made no progress for %.0fs (is a downstream down?); they stay "
                            "queued and run when it answers", len(left), stall)
                break
            if not threads and not seen_elsewhere and time.monotonic() - started >= HANDOVER_SECS:
                log.info("no drain claimed the %d replication job(s) within %.0fs: running them here", len(left),
                         HANDOVER_SECS)
                threads = _start_drain(cfg, queue, stop)
            done = len(keys) - len(left)
            if live:
                stream.write(f"\rreplicate: {done}/{len(keys)} jobs done")
                stream.flush()
            elif done != shown[0] and time.monotonic() - shown[1] >= 5:
                log.info("replicate: %d/%d jobs done", done, len(keys))
                shown = (done, time.monotonic())
            time.sleep(0.1)
            if threads and time.monotonic() - beat > queue.lease_secs / 3:
                queue.heartbeat()  # keep the leases of long pushes (another worker would reclaim them)
                beat = time.monotonic()
            left, elsewhere = _outstanding(queue, keys)
            seen_elsewhere = seen_elsewhere or bool(elsewhere)
        if live:
            stream.write(f"\rreplicate: {len(keys) - len(left)}/{len(keys)} jobs done\n")
        else:
            log.info("replicate: %d/%d jobs done%s", len(keys) - len(left), len(keys),
                     "" if threads else " (run by the queue's drain)")
    finally:
        stop.set()
        for t in threads:
            t.join()
    return len(left)


def _start_drain(cfg, queue, stop: threading.Event) -> list[threading.Thread]:
    def loop() -> None:
        while not stop.is_set():
            if queue.run_next() is None:
                stop.wait(0.05)

    threads = [threading.Thread(target=loop, name=f"angos-drain-{i}", daemon=True)
               for i in range(cfg.global_.max_concurrent_replication_jobs)]
    for t in threads:
        t.start()
    return threads
