"""``scrub --tombstones`` (second half): trim the change feed on the tombstone horizon.

The change feed (:mod:`angos.replication.changefeed`) needs no entry older
than ``[global.replication] tombstone_horizon``: a peer whose cursor is that
old has missed deletes whose tombstones are gone too, so it must compare
every tag anyway. The phase records the horizon as the feed's trim point and
removes the entries before it; a reader with an older cursor is then told
(``410 CURSOR_EXPIRED``) and ``angos replicate`` compares every tag with that
peer once. Safe while the server runs: writers only add entries after now.

``--dry-run`` prints one line and changes nothing::

    TrimChanges before=<cursor> entries=<n>
"""

from __future__ import annotations

import time

from ..replication.changefeed import ChangeFeed, stamp
from .common import PhaseRun, build_registry_for_scrub


def run(cfg, dry_run: bool, out=print, registry=None) -> int:
    reg = registry or build_registry_for_scrub(cfg)
    phase = PhaseRun("changes", dry_run, out)
    before = stamp(time.time() - cfg.global_.replication.tombstone_horizon)
    try:
        removed = ChangeFeed(reg.meta_store).trim(before, dry_run)
        phase.count("removed", removed)
        phase.act(f"TrimChanges before={before} entries={removed}")
    except Exception as exc:  # noqa: BLE001 - reported like every phase's problems
        phase.problem("changes: trimming the change feed failed: %s", exc)
    return phase.finish(("removed",))
