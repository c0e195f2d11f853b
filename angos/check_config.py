"""``angos [-c FILE]... check-config [--print]``: validate a configuration without starting anything.

It loads and merges the files exactly as ``angos server`` does and runs the
same start-up validation (:func:`angos.startup_checks.validate`: policies
compiled with their CEL type checks, argon2 hashes, TLS files), then:

- exit 0 and one line on stdout: ``angos: configuration ok (<files>): <summary>``;
- exit 1 and one line on stderr naming the file or key, as start-up would print it.

``--print`` then writes the merged, effective configuration (every default
filled in) as TOML to stdout, with secrets redacted (:mod:`angos.config_toml`).

It opens no socket and touches no data directory, so it is safe to run next to
a running server: the systemd units run it before starting the server and
before every reload, so an edit that would not start never takes the service
down.
"""

from __future__ import annotations

import argparse
import sys


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.description = ("Validate the configuration files the way `angos server` start-up does, without starting "
                     "anything: exit 0 with a one-line summary, or 1 with a one-line error.")
    p.add_argument("--print", action="store_true", dest="print_config",
                   help="also print the merged effective configuration as TOML (secrets redacted)")


def run(args, config_paths) -> int:
    from .config import ConfigError, load_config
    from .startup_checks import summary, validate

    try:
        cfg = load_config(config_paths)
        validate(cfg)
    except ConfigError as exc:
        print(f"angos: {str(exc).replace(chr(10), ' ')}", file=sys.stderr)  # one line, as start-up prints it
        return 1
    print(f"angos: configuration ok ({', '.join(config_paths)}): {summary(cfg)}")
    if args.print_config:
        from .config_toml import to_toml

        sys.stdout.write(to_toml(cfg, header=f"Effective configuration merged from {', '.join(config_paths)}, "
                                              "defaults included; secrets shown as \"<redacted>\"."))
    return 0
