"""Logging filters from ``ANGOS_LOG`` and ``RUST_LOG`` (SPEC 2).

``parse_filters`` turns ``info,angos.replication=debug`` into a root level and
per-logger levels; ``RUST_LOG`` spellings (``angos::replication``) read the
same. ``setup_logging`` runs in a child process so the global logging state
of the test run is untouched; the child's stderr shows what got through.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap

import pytest

from angos.logs import parse_filters


@pytest.mark.parametrize("spec,root,modules", [
    ("info,angos.replication=debug", logging.INFO, {"angos.replication": logging.DEBUG}),
    ("angos::replication=debug", logging.INFO, {"angos.replication": logging.DEBUG}),
    ("warn", logging.WARNING, {}),
    ("error,angos::api::v2=trace,angos.storage=warning", logging.ERROR,
     {"angos.api.v2": logging.DEBUG, "angos.storage": logging.WARNING}),
    (" DEBUG , angos.queue = info ", logging.DEBUG, {"angos.queue": logging.INFO}),
    ("", logging.INFO, {}),
])
def test_parse_filters_reads_root_level_and_per_module_levels(spec, root, modules):
    assert parse_filters(spec) == (root, modules)


def test_parse_filters_off_silences_a_module_entirely():
    root, modules = parse_filters("info,angos.api=off")
    assert modules["angos.api"] > logging.CRITICAL


def test_parse_filters_bare_module_name_enables_all_its_levels():
    assert parse_filters("angos.replication") == (logging.INFO, {"angos.replication": logging.DEBUG})


PROBE = textwrap.dedent("""\
    import logging
    from angos.logs import setup_logging
    setup_logging()
    logging.getLogger("angos.replication.pipeline").debug("probe-replication-debug")
    logging.getLogger("angos.api").debug("probe-api-debug")
    logging.getLogger("angos.api").info("probe-api-info")
    logging.getLogger("angos.api").warning("probe-api-warning")
    """)


def run_probe(**env: str) -> str:
    clean = {k: v for k, v in os.environ.items() if k not in ("ANGOS_LOG", "RUST_LOG")}
    res = subprocess.run([sys.executable, "-c", PROBE], env={**clean, **env}, capture_output=True, text=True,
                         timeout=30, check=True)
    return res.stderr


def test_angos_log_enables_debug_for_one_module_tree_only():
    err = run_probe(ANGOS_LOG="info,angos.replication=debug")
    assert "probe-replication-debug" in err
    assert "probe-api-debug" not in err
    assert "probe-api-info" in err


def test_rust_log_is_honoured_with_double_colons():
    err = run_probe(RUST_LOG="warn,angos::replication=debug")
    assert "probe-replication-debug" in err
    assert "probe-api-info" not in err
    assert "probe-api-warning" in err


def test_angos_log_takes_precedence_over_rust_log():
    err = run_probe(ANGOS_LOG="warn", RUST_LOG="debug")
    assert "probe-api-debug" not in err
    assert "probe-api-info" not in err
    assert "probe-api-warning" in err


def test_default_level_is_info():
    err = run_probe()
    assert "probe-api-info" in err
    assert "probe-api-debug" not in err
    assert "probe-replication-debug" not in err
