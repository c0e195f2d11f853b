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


# ------------------------------------------------------------------ line formats (angos.logs)

FORMAT_PROBE = textwrap.dedent("""\
    import logging
    from angos import logs
    logs.setup_logging()
    logs.use_format(__import__("sys").argv[1])
    log = logging.getLogger("angos.api")
    log.info("outside any request")
    logs.REQUEST_ID.set("req-7")
    log.warning("inside a request")
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("it failed")
    fields = {"request_id": "req-7", "client_ip": "127.0.0.1", "identity": "-", "method": "GET",
              "path": "/v2/a b", "action": "get-blob", "status": 200, "bytes_in": 0, "bytes_out": 5,
              "duration_secs": 0.001, "user_agent": 'say "hi"\\nnext'}
    logging.getLogger("angos.access").info("GET /v2/a b 200", extra={"access": fields})
    """)


def run_format_probe(fmt: str, **env: str) -> list[str]:
    clean = {k: v for k, v in os.environ.items() if k not in ("ANGOS_LOG", "RUST_LOG", "ANGOS_LOG_FORMAT")}
    res = subprocess.run([sys.executable, "-c", FORMAT_PROBE, fmt], env={**clean, **env}, capture_output=True,
                         text=True, timeout=30, check=True)
    return res.stderr.splitlines()


def test_json_format_is_one_object_per_line_with_stable_keys():
    import json

    lines = run_format_probe("json")
    docs = [json.loads(line) for line in lines]  # every line parses: tracebacks stay inside their object
    assert len(docs) == 4, lines
    outside, inside, failed, access = docs
    for doc in docs:
        assert list(doc)[:5] == ["ts", "level", "logger", "pid", "msg"], doc
        assert doc["ts"].endswith("Z") and "T" in doc["ts"], doc
    assert outside["msg"] == "outside any request" and "request_id" not in outside
    assert inside["request_id"] == "req-7" and inside["level"] == "WARNING" and inside["logger"] == "angos.api"
    assert failed["request_id"] == "req-7" and "ValueError: boom" in failed["exc"]
    assert access["logger"] == "angos.access" and access["request_id"] == "req-7"
    assert (access["path"], access["status"], access["bytes_out"], access["user_agent"]) == (
        "/v2/a b", 200, 5, 'say "hi"\nnext')


def test_text_format_prefixes_the_request_id_and_writes_the_access_line_as_logfmt():
    lines = run_format_probe("text")
    assert lines[0].endswith(" INFO angos.api: outside any request"), lines
    assert lines[1].endswith(" WARNING angos.api: request_id=req-7 inside a request"), lines
    assert lines[2].endswith(" ERROR angos.api: request_id=req-7 it failed"), lines
    assert lines[3] == "Traceback (most recent call last):", lines
    access = next(line for line in lines if " angos.access: " in line)
    # Values with spaces, quotes or line breaks are quoted, so one request stays one line.
    assert access.split(" angos.access: ", 1)[1] == (
        'request_id=req-7 client_ip=127.0.0.1 identity=- method=GET path="/v2/a b" action=get-blob status=200 '
        'bytes_in=0 bytes_out=5 duration_secs=0.001 user_agent="say \\"hi\\"\\nnext"')


def test_angos_log_format_overrides_the_configured_format():
    import json

    lines = run_format_probe("text", ANGOS_LOG_FORMAT="json")
    assert json.loads(lines[0])["msg"] == "outside any request"


def test_an_unknown_angos_log_format_is_named_in_a_warning_and_the_configured_one_used():
    lines = run_format_probe("text", ANGOS_LOG_FORMAT="xml")
    assert "ANGOS_LOG_FORMAT='xml' is not one of text, json" in lines[0], lines
    assert lines[1].endswith(" INFO angos.api: outside any request"), lines


@pytest.mark.parametrize("table,value,needle", [
    ("global", '"xml"', "global.log_format"),
    ("server", '"yes"', "server.access_log"),
])
def test_bad_logging_settings_fail_with_the_key_named(table, value, needle):
    from angos.config import ConfigError, load_config_text

    key = "log_format" if table == "global" else "access_log"
    base = '[server]\nbind_address = "127.0.0.1"\n[blob_store.fs]\nroot_dir = "/tmp/unused"\n'
    text = base.replace("[server]\n", f"[server]\n{key} = {value}\n") if table == "server" else (
        base + f"[global]\n{key} = {value}\n")
    with pytest.raises(ConfigError) as err:
        load_config_text(text)
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_logging_settings_default_to_text_with_the_access_log_on():
    from angos.config import load_config_text

    cfg = load_config_text('[server]\nbind_address = "127.0.0.1"\n[blob_store.fs]\nroot_dir = "/tmp/unused"\n')
    assert (cfg.global_.log_format, cfg.server.access_log) == ("text", True)
