"""``angos scrub [flags]`` and ``angos replicate``: run the selected maintenance phases.

Phases run in a fixed order (reconcile first, reclamation last) and each
prints its own summary line. The exit code is 1 when any phase reports a
problem (a skipped probe, a failed enqueue, an error), so cron and systemd
surface it. ``angos replicate`` is ``angos scrub --replicate``.
"""

from __future__ import annotations

from ..oci.errors import AngosError

PHASES = ["replicate"]


def run(args, config_paths) -> int:
    from ..config import load_config

    if args.command == "replicate":
        args.replicate = True
    selected = [name for name in PHASES if getattr(args, name.replace("-", "_"), None)]
    if not selected:
        raise AngosError("scrub: nothing to do; choose at least one of --replicate (see angos scrub --help)")
    cfg = load_config(config_paths)
    rc = 0
    for name in selected:
        rc |= _PHASE_RUNNERS[name](cfg, args)
    return rc


def _replicate(cfg, args) -> int:
    from ..replication import reconcile

    return reconcile.run(cfg, dry_run=args.dry_run)


_PHASE_RUNNERS = {"replicate": _replicate}
