"""``scrub --multipart AGE``: abort object-store multipart uploads older than AGE.

Only a blob store that offers ``abort_multipart_older_than(seconds)`` (S3)
has anything to do; it returns what it aborted, one description per upload.
With ``--dry-run`` it is called with ``dry_run=True`` when it accepts that
keyword (and must then only list); otherwise a dry run skips it. The filesystem
backend has no multipart uploads: the phase says so and succeeds.

``--dry-run`` prints one line per upload::

    AbortMultipart upload=<description>
"""

from __future__ import annotations

import inspect

from .common import PhaseRun, build_registry_for_scrub


def run(cfg, age: float, dry_run: bool, out=print, registry=None) -> int:
    reg = registry or build_registry_for_scrub(cfg)
    phase = PhaseRun("multipart", dry_run, out)
    abort = getattr(reg.blob_store, "abort_multipart_older_than", None)
    if abort is None:
        out(f"multipart: nothing to do: the {reg.blob_store.name} blob store has no multipart uploads")
        return 0
    if dry_run and "dry_run" not in inspect.signature(abort).parameters:
        out(f"multipart: the {reg.blob_store.name} blob store cannot preview aborts; nothing done (dry run)")
        return phase.finish()
    try:
        aborted = abort(age, dry_run=True) if dry_run else abort(age)
    except Exception as exc:  # noqa: BLE001 - report it as the phase's problem
        phase.problem("multipart: aborting old uploads failed: %s", exc)
        return phase.finish()
    for item in aborted or ():
        phase.act(f"AbortMultipart upload={item}")
        phase.count("would_abort" if dry_run else "aborted")
    return phase.finish(("would_abort",) if dry_run else ("aborted",))
