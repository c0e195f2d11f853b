"""``angos [-c FILE]... COMMAND``: argument parsing and dispatch.

Every failure ends with one line on stderr and exit code 1; tracebacks are
for bugs only.
"""

from __future__ import annotations

import argparse
import sys

from .oci.errors import AngosError


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="angos", description="OCI registry with active-active replication")
    p.add_argument("-c", "--config", action="append", metavar="FILE",
                   help="configuration file (repeatable; later files override earlier ones)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    sub.add_parser("server", help="serve the registry over HTTP")
    w = sub.add_parser("worker", help="drain the durable job queues")
    w.add_argument("--queue", action="append", choices=["replication", "cache"])
    w.add_argument("--poll-interval", default="1s")
    s = sub.add_parser("scrub", help="maintenance and reconciliation")
    s.add_argument("-d", "--dry-run", action="store_true")
    s.add_argument("--replicate", action="store_true")
    r = sub.add_parser("replicate", help="reconcile replicated repositories (scrub --replicate)")
    r.add_argument("-d", "--dry-run", action="store_true")
    sub.add_parser("argon", help="hash a password with argon2id")
    return p


def main(argv: list[str] | None = None) -> int:
    from .logs import setup_logging

    args = build_parser().parse_args(argv)
    setup_logging()
    paths = args.config or ["config.toml"]
    try:
        return _dispatch(args, paths)
    except AngosError as exc:
        print(f"angos: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 1


def _dispatch(args, paths) -> int:
    from .config import load_config

    if args.command == "server":
        cfg = load_config(paths)
        from .auth import AccessControl

        AccessControl(cfg)  # validate policies before forking workers
        from .server import run_server

        return run_server(cfg, paths)
    print(f"angos: the {args.command} command is not available in this build yet", file=sys.stderr)
    return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
