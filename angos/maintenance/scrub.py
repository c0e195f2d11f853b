"""``angos scrub [flags]`` and ``angos replicate``: run the selected maintenance phases.

Phases run in a fixed order (reconcile first, reclamation last) and each
prints its own summary line. The exit code is 1 when any phase reports a
problem (a skipped probe, a failed enqueue, an error), so cron and systemd
surface it. ``angos replicate`` is ``angos scrub --replicate``.

One module per phase: :mod:`angos.replication.reconcile` (``--replicate``),
:mod:`.orphans` (``--replication-orphans``, ``--cache-orphans``),
:mod:`.tags`, :mod:`.manifests`, :mod:`.referrers` (repairs), :mod:`.tombstones` and
:mod:`.changes` (deletes and change-feed entries older than the horizon),
:mod:`.retention`, :mod:`.grants` (``--orphan-grants``), :mod:`.uploads`,
:mod:`.multipart` and :mod:`.blobs`. Every phase honours
``--dry-run`` (report, change nothing) and is safe while the server runs.
"""

from __future__ import annotations

import logging

from ..oci.errors import AngosError

# Order matters: reconcile first; job orphans; consistency repairs before anything
# that judges "unreferenced" (a missing marker would make a used grant look orphaned);
# retention before the grant sweep, so what it unreferences can be reclaimed in the
# same run; byte reclamation last.
PHASES = ["replicate", "replication-orphans", "cache-orphans", "tags", "manifests", "referrers", "tombstones",
          "retention",
          "orphan-grants", "uploads", "multipart", "blobs"]


def run(args, config_paths) -> int:
    from ..config import load_config
    from ..logs import use_format

    if args.command == "replicate":
        args.replicate = True
    selected = [name for name in PHASES if getattr(args, name.replace("-", "_"), None)]
    if not selected:
        raise AngosError("scrub: nothing to do; choose at least one of "
                         + ", ".join(f"--{p}" for p in PHASES) + " (see angos scrub --help)")
    from .common import parse_age

    for flag in ("orphan-grants", "uploads", "multipart"):
        if flag in selected:  # a typo in a duration fails before any phase changes anything
            parse_age(getattr(args, flag.replace("-", "_")), f"--{flag}")
    if getattr(args, "full", False) and "replicate" not in selected:
        raise AngosError("scrub: --full applies to --replicate only")
    cfg = load_config(config_paths)
    use_format(cfg.global_.log_format)
    if cfg.metadata.lock_strategy.kind == "memory" and not args.dry_run and set(selected) - {"replicate"}:
        # Process-local locks cannot exclude a running server's writers: only the age gates protect them.
        logging.getLogger("angos.maintenance").warning(
            "the memory lock strategy is not shared with a running server; run scrub while the server is "
            "stopped, or configure a shared lock strategy (file, redis, s3)")
    rc = 0
    for name in selected:
        rc |= _PHASE_RUNNERS[name](cfg, args)
    return rc


def _replicate(cfg, args) -> int:
    from ..replication import reconcile

    return reconcile.run(cfg, dry_run=args.dry_run, full=getattr(args, "full", False))


def _horizon(cfg, args) -> int:
    """``--tombstones``: forget deletes, then change-feed entries, older than the tombstone horizon."""
    from . import changes, tombstones
    from .common import build_registry_for_scrub

    reg = build_registry_for_scrub(cfg)
    return tombstones.run(cfg, args.dry_run, registry=reg) | changes.run(cfg, args.dry_run, registry=reg)


def _orphans(queue: str):
    def runner(cfg, args) -> int:
        from . import orphans

        return orphans.run(cfg, queue, args.dry_run)
    return runner


def _aged(flag: str, module: str, fn: str = "run"):
    """A phase taking ``--<flag> AGE``: the duration is checked before the phase starts."""
    def runner(cfg, args) -> int:
        import importlib

        from .common import parse_age

        age = parse_age(getattr(args, flag.replace("-", "_")), f"--{flag}")
        return getattr(importlib.import_module(f"{__package__}.{module}"), fn)(cfg, age, args.dry_run)
    return runner


def _plain(module: str, fn: str = "run"):
    def runner(cfg, args) -> int:
        import importlib

        return getattr(importlib.import_module(f"{__package__}.{module}"), fn)(cfg, args.dry_run)
    return runner


_PHASE_RUNNERS = {
    "replicate": _replicate,
    "replication-orphans": _orphans("replication"),
    "cache-orphans": _orphans("cache"),
    "tags": _plain("tags", "run_tags"),
    "manifests": _plain("manifests", "run_manifests"),
    "referrers": _plain("referrers", "run_referrers"),
    "tombstones": _horizon,
    "retention": _plain("retention"),
    "orphan-grants": _aged("orphan-grants", "grants"),
    "uploads": _aged("uploads", "uploads"),
    "multipart": _aged("multipart", "multipart"),
    "blobs": _plain("blobs"),
}
