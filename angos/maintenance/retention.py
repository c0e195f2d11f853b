"""``scrub --retention``: apply ``retention_policy`` CEL rules; deletions replicate.

Semantics (rules say what to **keep**):

- A namespace's rules are ``[global.retention_policy]`` plus its repository's
  ``retention_policy``, OR'd together. A namespace with no rule at all is
  never touched.
- The candidates of a namespace are its tags and its revisions that no tag
  points at (untagged). Each is evaluated with ``image.tag`` (null when
  untagged), ``image.pushed_at`` (seconds since the epoch: the tag record's
  author time, or the revision's push time), ``image.last_pulled_at``
  (``repositories/<ns>/_pulls``, written when ``global.update_pull_time`` is
  on; 0 when never pulled), ``now()``, ``days(n)``, ``hours(n)``,
  ``minutes(n)``, ``top_pushed(k)`` and ``top_pulled(k)``. The two ``top``
  functions rank every candidate of the namespace (most recent first, ties by
  name) and are true for the first k; never-pulled candidates are never in
  ``top_pulled``.
- A candidate is kept when any rule returns true. When every rule returns
  false it is deleted: a tag through ``DELETE <ns>:<tag>``, an untagged
  revision through ``DELETE <ns>@<digest>``.
- Fail open: a rule that errors or returns a non-boolean keeps the candidate
  and is logged at warning with ``treating as 'retain' (fail-open)``. Rules
  that do not compile stop the phase before anything is deleted.
- Protected, never deleted: a manifest some index in the namespace lists as
  a child, a manifest with referrers (signatures, SBOMs), and a referrer
  whose subject is still present (a signature goes with its image, not
  before it); a tag pointing at one is kept too.
- Protected too: the loser of a replication conflict, for
  ``[global.replication] conflict_protection`` after the conflict was recorded
  (:mod:`angos.replication.conflicts`), so an operator can still re-tag it;
  counted as ``losers``. Its blobs stay with it (its reference markers keep
  them from ``--orphan-grants`` and ``--blobs``).
- One snapshot per run: a revision this run leaves untagged is evaluated on
  the next run (as untagged), so a dry run lists exactly what the real run
  does.

Deletions go through :meth:`ManifestService.delete`, the same path as an
HTTP DELETE, so they emit events (event webhooks report them with the internal
actor ``retention``); this process wires a
:class:`~angos.replication.listener.ReplicationListener` to them, enqueues
the replication deletes, and drains what it enqueued before exiting (as
``--replicate`` does). It records them in the change feed too, as the server
records its own.

``--dry-run`` prints one line per deletion::

    DeleteTag namespace=<ns> tag=<tag> digest=<digest>
    DeleteManifest namespace=<ns> digest=<digest>
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass

import cel

from ..oci.digest import Digest
from ..oci.errors import AngosError
from ..registry import paths
from ..registry.events import RETENTION
from ..registry.timestamps import parse_ts
from ..replication.conflicts import ConflictLog
from ..storage import NotFound
from .common import PhaseRun, build_registry_for_scrub, namespaces

log = logging.getLogger("angos.maintenance.retention")


@dataclass
class Candidate:
    tag: str | None
    digest: Digest
    pushed: float           # exact times (seconds): ranking must not tie on whole seconds
    pulled: float
    pushed_rank: int = 0
    pulled_rank: int | None = None

    @property
    def pushed_at(self) -> int:
        return int(self.pushed)

    @property
    def last_pulled_at(self) -> int:
        return int(self.pulled)

    @property
    def name(self) -> str:
        return self.tag if self.tag is not None else str(self.digest)


def compile_rules(cfg) -> dict:
    """``where`` → compiled program for every configured rule; a bad rule is one AngosError line."""
    sources = [("global.retention_policy", cfg.global_.retention_policy)]
    sources += [(f'repository."{key}".retention_policy', repo.retention_policy)
                for key, repo in cfg.repository.items() if repo.retention_policy is not None]
    out = {}
    for where, policy in sources:
        for i, src in enumerate(policy.rules):
            try:
                out[(where, i)] = (src, cel.compile(src))
            except Exception as exc:  # noqa: BLE001 - the binding raises ValueError
                raise AngosError(f"{where}.rules[{i}]: invalid CEL rule {src!r}: "
                                 f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    return out


def rules_for(cfg, ns: str, compiled: dict) -> list:
    where = ["global.retention_policy"]
    key, repo = cfg.repository_for(ns)
    if repo is not None and repo.retention_policy is not None:
        where.append(f'repository."{key}".retention_policy')
    return [(f"{w}.rules[{i}]", src, prog) for (w, i), (src, prog) in compiled.items() if w in where]


def candidates(reg, ns: str) -> list[Candidate]:
    meta = reg.meta_store
    tagged: set[str] = set()
    out: list[Candidate] = []
    for tag in reg.manifests.tags.names(ns):
        rec = reg.manifests.tag_record(ns, tag)
        if rec is None:
            continue  # corrupt: scrub --tags removes it
        try:
            d = Digest.parse(rec.digest)
        except Exception:  # noqa: BLE001
            continue
        tagged.add(str(d))
        out.append(Candidate(tag, d, _secs(rec.created), _pulled(reg, ns, d)))
    for d in reg.manifests.list_revisions(ns):
        if str(d) in tagged:
            continue
        try:
            header = json.loads(meta.get(paths.revision(ns, d)).partition(b"\n")[0])
        except (NotFound, ValueError):
            continue
        out.append(Candidate(None, d, _secs(parse_ts(header.get("created_at"))), _pulled(reg, ns, d)))
    for rank, c in enumerate(sorted(out, key=lambda c: (-c.pushed, c.name))):
        c.pushed_rank = rank
    pulled = [c for c in out if c.pulled > 0]
    for rank, c in enumerate(sorted(pulled, key=lambda c: (-c.pulled, c.name))):
        c.pulled_rank = rank
    return out


def _secs(ts) -> float:
    return ts.timestamp() if ts is not None else 0.0


def _pulled(reg, ns: str, d: Digest) -> float:
    return _secs(reg.last_pull(ns, d))


def protected(reg, ns: str, d: Digest) -> bool:
    """An index child, a manifest with referrers, or a referrer whose subject is still here."""
    meta = reg.meta_store
    if meta.children(paths.ref_dir(ns, d)) or meta.children(paths.referrers_dir(ns, d)):
        return True
    try:
        subject = json.loads(meta.get(paths.revision(ns, d)).partition(b"\n")[0]).get("subject")
        return bool(subject) and reg.manifests.has_revision(ns, Digest.parse(subject))
    except (NotFound, ValueError, AttributeError):
        return False


def keep(c: Candidate, rules: list, now_secs: int) -> bool:
    ctx = cel.Context(variables={"image": {"tag": c.tag, "pushed_at": c.pushed_at,
                                           "last_pulled_at": c.last_pulled_at}})
    ctx.add_function("now", lambda: now_secs)
    ctx.add_function("days", lambda n: int(n) * 86400)
    ctx.add_function("hours", lambda n: int(n) * 3600)
    ctx.add_function("minutes", lambda n: int(n) * 60)
    ctx.add_function("top_pushed", lambda k: c.pushed_rank < int(k))
    ctx.add_function("top_pulled", lambda k: c.pulled_rank is not None and c.pulled_rank < int(k))
    for where, src, prog in rules:
        try:
            result = prog.execute(ctx)
        except Exception as exc:  # noqa: BLE001 - fail open
            log.warning("retention rule %s %r evaluation failed for %s: %s; treating as 'retain' (fail-open)",
                        where, src, c.name, exc)
            return True
        if result is True:
            return True
        if result is not False:
            log.warning("retention rule %s %r returned non-boolean value %r for %s; "
                        "treating as 'retain' (fail-open)", where, src, result, c.name)
            return True
    return False


def run(cfg, dry_run: bool, out=print, registry=None) -> int:
    compiled = compile_rules(cfg)
    phase = PhaseRun("retention", dry_run, out)
    if not compiled:
        out("retention: no retention_policy rules configured; nothing to do")
        return phase.finish(("deleted", "kept"))
    reg = registry or build_registry_for_scrub(cfg)
    keys: set[str] = set()
    queue = None
    if not dry_run:
        queue = _wire_replication(cfg, reg, keys)
        from ..replication.changefeed import wire

        wire(reg)  # its deletes are tag changes like the server's: peers' reconciles read them
        from ..events import wire as wire_webhooks
        from ..queue import JobQueues

        # Reported like a client's deletes, with the internal actor "retention"; async deliveries are
        # queued for the server's drain or the workers.
        wire_webhooks(reg, lambda: cfg, JobQueues(cfg))
    now_secs = int(time.time())
    losers = ConflictLog(reg.meta_store).protected_losers(cfg.global_.replication.conflict_protection)
    for ns in namespaces(reg.meta_store):
        rules = rules_for(cfg, ns, compiled)
        if not rules or not reg.manifests.namespace_exists(ns):
            continue
        phase.count("namespaces")
        for c in candidates(reg, ns):
            phase.tick("manifests")
            if protected(reg, ns, c.digest):
                phase.count("protected")
                continue
            if (ns, str(c.digest)) in losers:
                phase.count("losers")
                continue
            if keep(c, rules, now_secs):
                phase.count("kept")
                continue
            line = (f"DeleteTag namespace={ns} tag={c.tag} digest={c.digest}" if c.tag is not None
                    else f"DeleteManifest namespace={ns} digest={c.digest}")
            phase.act(line)
            phase.count("deleted")
            if dry_run:
                continue
            try:
                reg.manifests.delete(ns, c.tag if c.tag is not None else str(c.digest), actor=RETENTION)
            except Exception as exc:  # noqa: BLE001 - e.g. deleted concurrently; report and go on
                phase.problem("retention: deleting %s:%s failed: %s", ns, c.name, exc)
    if queue is not None and keys:
        from ..replication.reconcile import wait

        wait(cfg, queue, keys)
    return phase.finish(("namespaces", "deleted", "kept", "protected", "losers"))


def _wire_replication(cfg, reg, keys: set[str]):
    """Registry events → replication jobs, as the server wires them; remembers what it enqueued."""
    from ..queue import JobQueues
    from ..replication.listener import ReplicationListener

    if not any(repo.downstream for repo in cfg.repository.values()):
        return None
    queues = JobQueues(cfg)

    def enqueue(job) -> bool:
        ok = queues.enqueue("replication", job.kind, job.lock_key, job.payload())
        keys.add(job.lock_key)
        return ok

    reg.listeners.add(ReplicationListener(lambda: cfg, enqueue))
    return queues["replication"]
