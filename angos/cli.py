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
}
QUEUES = ("replication", "cache")


def _worker_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--queue", action="append", choices=QUEUES, dest="queues", metavar="{replication,cache}",
                   help="queue to drain (repeatable; default: both)")
    p.add_argument("--poll-interval", default="50ms", metavar="DURATION",
                   help="idle poll and scheduler interval, e.g. 50ms or 1s (default 50ms)")
    p.add_argument("--in-process", action="store_true", help=argparse.SUPPRESS)


def _argon_args(p: argparse.ArgumentParser) -> None:
    p.description = ("Read a password (prompted without echo on a terminal, one line from stdin "
                     "otherwise) and print an argon2id hash for [auth.identity.<id>] password.")


ARGUMENTS = {"worker": _worker_args, "argon": _argon_args}


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
