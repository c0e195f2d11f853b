"""``python -m bench`` (``make bench``): run the benchmarks in order.

``registry`` (angos against CNCF Distribution) runs first, then every other
``bench/<name>_bench.py`` present (e.g. ``auth``, ``queue``) in name order.
``--only NAME`` (repeatable, or a comma list) runs just those; ``--quick``
is passed on to each as ``["--quick"]``; arguments after ``--`` go to the
registry benchmark (e.g. ``-- --repeat 5 --measure manifest``).

One failing benchmark does not stop the others; the exit status is non-zero
if any failed. SIGTERM and SIGHUP are turned into KeyboardInterrupt so every
benchmark's cleanup (servers stopped, temporary directories removed) runs on
them as it does on Ctrl-C.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import pkgutil
import signal
import sys
import traceback
from pathlib import Path

FIRST = "registry"


def available() -> list[str]:
    here = Path(__file__).resolve().parent
    names = [m.name[:-len("_bench")] for m in pkgutil.iter_modules([str(here)]) if m.name.endswith("_bench")]
    return sorted(names, key=lambda n: (n != FIRST, n))


def _interrupt(signum, _frame):
    raise KeyboardInterrupt(f"signal {signum}")


def run_one(name: str, argv: list[str]) -> int:
    module = importlib.import_module(f"bench.{name}_bench")
    main = getattr(module, "main", None)
    if main is None:
        print(f"bench: bench/{name}_bench.py has no main()", file=sys.stderr)
        return 1
    takes_argv = bool(inspect.signature(main).parameters)
    try:
        rc = main(argv) if takes_argv else main()
    except SystemExit as exc:
        if exc.code is not None and not isinstance(exc.code, int):
            print(exc.code, file=sys.stderr)
        rc = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return rc or 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1:]
    names = available()
    p = argparse.ArgumentParser(prog="python -m bench", description="Angos benchmarks.")
    p.add_argument("--quick", action="store_true", help="small sizes and short runs (a smoke test)")
    p.add_argument("--only", action="append", default=[], metavar="NAME",
                   help=f"run only this benchmark (repeatable or comma list); available: {', '.join(names)}")
    p.add_argument("--list", action="store_true", help="list the available benchmarks and exit")
    args = p.parse_args(argv)
    if args.list:
        print("\n".join(names))
        return 0
    chosen = [n.strip() for item in args.only for n in item.split(",") if n.strip()] or names
    unknown = [n for n in chosen if n not in names]
    if unknown:
        p.error(f"unknown benchmark(s) {', '.join(unknown)}; available: {', '.join(names)}")

    # Ctrl-C must reach us even when started from a shell that ignores SIGINT in background jobs.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGHUP, _interrupt)
    failed = []
    for name in sorted(chosen, key=names.index):
        sub_argv = (["--quick"] if args.quick else []) + (extra if name == FIRST else [])
        print(f"\n== bench {name} {' '.join(sub_argv)}".rstrip(), flush=True)
        try:
            rc = run_one(name, sub_argv)
        except KeyboardInterrupt:
            print(f"bench: interrupted during {name}", file=sys.stderr)
            return 130
        except Exception:
            traceback.print_exc()
            rc = 1
        if rc:
            failed.append(name)
    if failed:
        print(f"bench: failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
