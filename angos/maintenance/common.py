"""What every scrub phase shares: progress, counters, the summary line, storage walks.

A phase builds a :class:`PhaseRun`, calls :meth:`PhaseRun.tick` per item it
examines, :meth:`PhaseRun.act` per change it makes (or, with ``--dry-run``,
would make), :meth:`PhaseRun.problem` per thing it could not fix, and ends
with :meth:`PhaseRun.finish`, which prints ``<phase>: key=value ...
elapsed=<s>`` and returns the phase's exit code (1 when any problem was
counted).

Action lines are machine-parsable, one per line (``Verb key=value ...``):
printed on stdout with ``--dry-run`` (they are the report), logged at info
otherwise. Progress is a live counter on stderr when stderr is a terminal and
a log line every :data:`LOG_EVERY` items otherwise.
"""

from __future__ import annotations

import logging
import sys
import threading
import time

from ..oci.digest import Digest
from ..registry import paths
from ..registry.timestamps import now, parse_ts

LOG_EVERY = 1000


class PhaseRun:
    def __init__(self, name: str, dry_run: bool, out=print, stream=None):
        self.name = name
        self.dry_run = dry_run
        self.out = out
        self.log = logging.getLogger(f"angos.maintenance.{name.replace('-', '_')}")
        self.stream = stream or sys.stderr
        self.live = bool(getattr(self.stream, "isatty", lambda: False)())
        self.counts: dict[str, int] = {}
        self.problems = 0
        self.seen = 0
        self.started = time.monotonic()
        self._lock = threading.Lock()

    def count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self.counts[key] = self.counts.get(key, 0) + n

    def tick(self, what: str = "items") -> None:
        with self._lock:
            self.seen += 1
            seen = self.seen
        if self.live:
            self.stream.write(f"\r{self.name}: {seen} {what} examined")
            self.stream.flush()
        elif seen % LOG_EVERY == 0:
            self.log.info("%s: %d %s examined", self.name, seen, what)

    def act(self, line: str) -> None:
        """Report one change (made, or only planned under ``--dry-run``)."""
        if self.dry_run:
            self._clear()
            self.out(line)
        else:
            self.log.info("%s", line)

    def problem(self, message: str, *args, level: int = logging.ERROR) -> None:
        self.problems += 1
        self._clear()
        self.log.log(level, message, *args)

    def _clear(self) -> None:
        if self.live and self.seen:
            self.stream.write("\r\033[K")
            self.stream.flush()

    def finish(self, keys: tuple[str, ...] = ()) -> int:
        if self.live and self.seen:
            self.stream.write("\n")
            self.stream.flush()
        parts = [f"{k}={self.counts.get(k, 0)}" for k in keys]
        parts += [f"{k}={v}" for k, v in sorted(self.counts.items()) if k not in keys]
        parts.append(f"problems={self.problems}")
        if self.dry_run:
            parts.append("dry_run=true")
        self.out(f"{self.name}: " + " ".join(parts) + f" elapsed={time.monotonic() - self.started:.1f}s")
        return 1 if self.problems else 0


def parse_age(value: str, flag: str) -> float:
    """``--uploads 24h`` → seconds; a malformed duration is a one-line usage error."""
    from ..config import ConfigError, parse_duration
    from ..oci.errors import AngosError

    try:
        secs = parse_duration(value)
    except (ConfigError, ValueError, TypeError) as exc:
        raise AngosError(f"scrub {flag}: invalid duration {value!r} (use e.g. 30m, 24h, 2d): {exc}") from None
    if secs < 0:
        raise AngosError(f"scrub {flag}: the duration must not be negative")
    return secs


def age_secs(stamp: str | None, fallback_mtime: float | None = None) -> float | None:
    """Seconds since an RFC 3339 stamp (or since ``fallback_mtime`` when the stamp is unreadable)."""
    ts = parse_ts(stamp)
    if ts is not None:
        return (now() - ts).total_seconds()
    if fallback_mtime is not None:
        return time.time() - fallback_mtime
    return None


def namespaces(meta) -> list[str]:
    """Every namespace with any state under ``repositories/`` (manifests, grants, markers...).

    Wider than the catalog, which lists only namespaces with manifests: a
    namespace whose first push stopped after its blobs holds grants and
    nothing else, and those grants are exactly what scrub must find."""
    out: list[str] = []

    def walk(key: str, ns: str) -> None:
        children = meta.children(key)
        if ns and any(c.startswith("_") for c in children):
            out.append(ns)
        for child in children:
            if not child.startswith("_"):
                walk(f"{key}/{child}", f"{ns}/{child}" if ns else child)

    walk(paths.REPOS, "")
    return sorted(out)


def digests_under(store, prefix: str, sharded: bool = False):
    """Yield ``Digest`` for ``<prefix>/<alg>/<hex>`` (or ``<alg>/<xx>/<hex>`` when sharded) entries."""
    for alg in store.children(prefix):
        shards = store.children(f"{prefix}/{alg}") if sharded else [None]
        for shard in shards:
            base = f"{prefix}/{alg}/{shard}" if sharded else f"{prefix}/{alg}"
            for hexpart in store.children(base):
                try:
                    yield Digest.parse(f"{alg}:{hexpart}")
                except Exception:  # noqa: BLE001 - a stray file is not a digest entry
                    continue


def build_registry_for_scrub(cfg):
    from ..registry import build_registry

    return build_registry(cfg)
