"""``scrub --replication-orphans`` and ``scrub --cache-orphans``: drop jobs nothing can run.

A job names its target by identifiers (SPEC 10), so when the configuration
loses that target its pending copies would only dead-letter and its
dead-lettered copies could never be retried. This phase deletes, from both
the pending and the dead-letter lists of one queue, every job that is
*orphaned*:

- replication (payload ``repository``, ``downstream``; :mod:`angos.replication.jobs`):
  the repository is no longer configured, or it no longer has a downstream
  of that name;
- cache (``cache.fill_blob``, payload ``repository``, ``namespace``,
  ``digest``; :mod:`angos.cache.tasks`): the payload's ``repository`` is no
  longer configured or has no ``upstream`` left, or the payload names an
  ``upstream`` URL the repository no longer lists (no kind does today). A
  cache job without a ``repository`` field is never touched.

Running jobs are left alone (their owner finishes or dead-letters them; the
next run removes them). Deletion uses the queue's admin operations, so a job
is removed only in the state it was listed in. ``--dry-run`` prints one line
per job and deletes nothing::

    DeleteOrphanJob queue=<q> state=<pending|failed> kind=<kind> repository=<r>
                    target=<downstream or upstream> key=<storage key>   (one line)
"""

from __future__ import annotations

from .common import PhaseRun


def replication_orphan(cfg, payload: dict) -> str | None:
    """Why a replication job is orphaned (None when its target is still configured)."""
    repo = cfg.repository.get(payload.get("repository"))
    if repo is None:
        return "repository"
    if payload.get("downstream") not in {ds.name for ds in repo.downstream}:
        return "downstream"
    return None


def cache_orphan(cfg, payload: dict) -> str | None:
    if "repository" not in payload:
        return None
    repo = cfg.repository.get(payload.get("repository"))
    if repo is None:
        return "repository"
    if not repo.upstream:
        return "upstream"
    upstream = payload.get("upstream")
    if upstream is not None and upstream not in {u.url for u in repo.upstream}:
        return "upstream"
    return None


RULES = {"replication": replication_orphan, "cache": cache_orphan}


def run(cfg, queue_name: str, dry_run: bool, out=print) -> int:
    from ..queue import JobQueues

    phase = PhaseRun(f"{queue_name}-orphans", dry_run, out)
    rule = RULES[queue_name]
    queue = JobQueues(cfg)[queue_name]
    try:
        for state, lister, deleter in (("pending", queue.list_pending, queue.delete_pending),
                                       ("failed", queue.list_failed, queue.delete_failed)):
            # Collect first: deleting while paging would shift the cursor under us.
            jobs, after = [], None
            while True:
                page, after = lister(after, 1000)
                jobs.extend(page)
                if not after:
                    break
            for job in jobs:
                phase.tick("jobs")
                payload = job.get("payload") or {}
                why = rule(cfg, payload)
                if why is None:
                    phase.count("kept")
                    continue
                target = payload.get("downstream") if queue_name == "replication" else payload.get("upstream")
                line = (f"DeleteOrphanJob queue={queue_name} state={state} kind={job['kind']} "
                        f"repository={payload.get('repository')} target={target} key={job['storage_key']}")
                phase.act(line)
                if dry_run:
                    phase.count("orphans")
                    continue
                try:
                    if deleter(job["storage_key"]):
                        phase.count("deleted")
                    else:
                        phase.count("gone")  # claimed, retried or deleted since we listed it
                except Exception as exc:  # noqa: BLE001 - report and carry on with the rest
                    phase.problem("cannot delete orphaned job %s: %s", job["storage_key"], exc)
    finally:
        queue.close()
    return phase.finish(("orphans", "kept") if dry_run else ("deleted", "kept"))
