"""``angos [-c FILE]... COMMAND``: argument parsing and dispatch.

Each command lives in its own module exposing ``configure_parser(parser)`` and
``run(args, config_paths) -> int``; this module only wires them together.
Every failure ends with one line on stderr and exit code 1; tracebacks are
for bugs only.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from .oci.errors import AngosError

# command name -> (module, help). A module is imported only when its command runs:
# `angos server` must set up Prometheus' multiprocess directory before anything
# imports prometheus_client, so parsing never imports command modules.
COMMANDS = {
    "server": ("angos.server", "serve the registry over HTTP"),
    "worker": ("angos.worker", "drain the durable job queues (requires [global.job_queue])"),
    "argon": ("angos.auth.argon_cli", "hash a password (argon2id) for [auth.identity.<id>]"),
    "check-config": ("angos.check_config", "validate the configuration as server start-up does (exit 0 ok, 1 not); "
                     "--print shows the effective configuration, secrets redacted"),
    "scrub": ("angos.maintenance.scrub", "maintenance: reconcile replication, clean orphans, repair, reclaim"),
    "replicate": ("angos.maintenance.scrub", "reconcile replicated repositories (same as scrub --replicate)"),
    "replication-status": ("angos.replication.status_cli",
                           "ask a running server whether a tag has reached its downstreams (exit 0 in sync, "
                           "1 not, 2 error)"),
}
QUEUES = ("replication", "cache", "webhooks")


def _worker_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--queue", action="append", choices=QUEUES, dest="queues", metavar="{replication,cache,webhooks}",
                   help="queue to drain (repeatable; default: all)")
    p.add_argument("--poll-interval", default="50ms", metavar="DURATION",
                   help="idle poll and scheduler interval, e.g. 50ms or 2s (default 50ms)")
    p.add_argument("--metrics-address", metavar="HOST:PORT",
                   help="serve this worker's Prometheus /metrics on HOST:PORT (e.g. 127.0.0.1:9102)")
    p.add_argument("--in-process", action="store_true", help=argparse.SUPPRESS)


def _argon_args(p: argparse.ArgumentParser) -> None:
    p.description = ("Read a password (prompted without echo on a terminal, one line from stdin "
                     "otherwise) and print an argon2id hash for [auth.identity.<id>] password.")


def _scrub_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-d", "--dry-run", action="store_true", help="report what would be done; change nothing")
    p.add_argument("--replicate", action="store_true",
                   help="reconcile every replicated namespace with its downstreams (enqueue pushes/deletes)")
    p.add_argument("--full", action="store_true",
                   help="with --replicate: compare every tag, even with peers whose change feeds could narrow it")
    p.add_argument("--replication-orphans", action="store_true",
                   help="delete replication jobs whose repository or downstream is no longer configured")
    p.add_argument("--cache-orphans", action="store_true",
                   help="delete cache jobs whose repository or upstream is no longer configured")
    p.add_argument("--orphan-grants", metavar="AGE",
                   help="revoke blob grants no manifest references, for blobs older than AGE (e.g. 24h)")
    p.add_argument("--uploads", metavar="AGE", help="delete upload sessions started more than AGE ago")
    p.add_argument("--blobs", action="store_true",
                   help="reclaim blob bytes no namespace holds; verify stored digests, quarantine corrupt blobs")
    p.add_argument("--tags", action="store_true", help="remove tags that point at missing manifests")
    p.add_argument("--manifests", action="store_true", help="repair manifest revisions' reference markers")
    p.add_argument("--referrers", action="store_true", help="repair the referrers index")
    p.add_argument("--tombstones", action="store_true",
                   help="forget deletes (and change-feed entries) older than [global.replication] tombstone_horizon")
    p.add_argument("--retention", action="store_true", help="apply retention policies (deletions replicate)")
    p.add_argument("--multipart", metavar="AGE", help="abort S3 multipart uploads older than AGE")


def _replicate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-d", "--dry-run", action="store_true", help="print the actions; enqueue nothing")
    p.add_argument("--full", action="store_true",
                   help="compare every tag, even with peers whose change feeds could narrow it")


def _status_args(p: argparse.ArgumentParser) -> None:
    # Declared in angos.replication.status_cli, which imports nothing heavy at module level.
    from .replication.status_cli import configure_parser

    configure_parser(p)


def _check_config_args(p: argparse.ArgumentParser) -> None:
    from .check_config import configure_parser  # imports nothing heavy at module level

    configure_parser(p)


ARGUMENTS = {"worker": _worker_args, "argon": _argon_args, "scrub": _scrub_args, "replicate": _replicate_args,
             "replication-status": _status_args, "check-config": _check_config_args}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="angos", description="OCI registry with active-active replication")
    p.add_argument("-c", "--config", action="append", metavar="FILE",
                   help="configuration file (repeatable; later files override earlier ones; default config.toml)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, (_module, help_text) in COMMANDS.items():
        sp = sub.add_parser(name, help=help_text)
        if name in ARGUMENTS:
            ARGUMENTS[name](sp)
    return p


def main(argv: list[str] | None = None) -> int:
    from .logs import setup_logging

    args = build_parser().parse_args(argv)
    setup_logging()
    paths = args.config or ["config.toml"]
    try:
        module = importlib.import_module(COMMANDS[args.command][0])
        return int(module.run(args, paths) or 0)
    except AngosError as exc:
        print(f"angos: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
