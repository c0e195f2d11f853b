"""Logging: filters from ``ANGOS_LOG`` and ``RUST_LOG`` (SPEC 2), the line formats, a quiet server log.

``parse_filters`` turns ``info,angos.replication=debug`` into a root level and
per-logger levels; ``RUST_LOG`` spellings (``angos::replication``) read the
same. ``setup_logging`` runs in a child process so the global logging state
of the test run is untouched; the child's stderr shows what got through.

The format tests do the same for ``text`` and ``json`` lines. The server tests
read a real server's log: a clean skopeo round trip (TLS verification off), a
reload and a graceful stop leave no WARNING or ERROR line, and gunicorn's own
lines come out in angos' format. The access line has its own tests
(tests/api/test_access_log.py).
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
import textwrap

import pytest
import requests

from angos.logs import parse_filters

from .conftest import skopeo, wait_for
from .images import layout_digest, single_platform_image


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


# ------------------------------------------------------------------ a running server's log


NOISE = re.compile(r"(^|[\s\[])(WARNING|ERROR|CRITICAL)([\s\]:]|$)")


def test_clean_round_trip_reload_and_stop_log_no_warning_or_error(angos_factory, tmp_path):
    """skopeo with TLS verification off (it tries https first on this plain-HTTP port), a
    configuration reload and a graceful stop, each with an idle keep-alive connection open:
    nothing in the log may look like a fault."""
    server = angos_factory(env={"ANGOS_LOG": "info,angos.server=debug"})
    image = single_platform_image(tmp_path / "src", tag="v1")
    remote = f"docker://{server.host}/quiet/app:v1"
    skopeo("copy", "--dest-tls-verify=false", image.oci_ref, remote)
    skopeo("copy", "--src-tls-verify=false", remote, f"oci:{tmp_path / 'out'}:v1")
    assert layout_digest(tmp_path / "out", "v1") == image.digest
    # skopeo's TLS probe was recognised and said for what it is, at DEBUG.
    assert "TLS handshake from 127.0.0.1 on this plain-HTTP port" in server.logs()

    with requests.Session() as idle:  # its connection stays open, idle, across the reload
        assert idle.get(server.url + "/v2/", timeout=30).status_code == 200
        old = set(server.worker_pids())
        server.config_path.write_text(server.config_path.read_text() + '\n[global]\nmax_manifest_size = "6MiB"\n')
        wait_for(lambda: "configuration reloaded" in server.logs(), timeout=30, what="the reload")
        wait_for(lambda: len(server.worker_pids()) == 2 and not set(server.worker_pids()) & old, timeout=60,
                 what="the old workers to be replaced")
    with requests.Session() as idle:  # and one on the new workers, across the stop
        assert idle.get(server.url + "/v2/", timeout=30).status_code == 200
        assert server.stop() == 0

    log = server.logs()
    assert [line for line in log.splitlines() if NOISE.search(line) or line.startswith("Traceback")] == [], log
    loaded = [line for line in log.splitlines() if "configuration loaded from" in line]
    assert len(loaded) == 1, log
    assert all(part in loaded[0] for part in (f"listen http://127.0.0.1:{server.port}",
                                              f"blobs fs:{server.workdir / 'data'}", "0 repositories",
                                              "0 downstreams", "0 upstreams", "in-process drain"))
    assert log.count("configuration reloaded from") == 1, log  # the edit, not the start


def test_gunicorn_lines_share_the_json_format(angos_factory):
    server = angos_factory(env={"ANGOS_LOG_FORMAT": "json"})
    assert server.stop() == 0
    docs = [json.loads(line) for line in server.logs().splitlines()]  # every line is one JSON object
    loggers = {d["logger"] for d in docs}
    assert "gunicorn.error" in loggers and "angos.server" in loggers, loggers
    assert any(d["logger"] == "gunicorn.error" and d["msg"].startswith("Listening at") for d in docs), docs


def test_ctrl_c_stops_the_server_quietly(angos_factory):
    """Ctrl-C in a terminal (``make run``) sends SIGINT to every process of the server at once."""
    server = angos_factory()
    with requests.Session() as idle:
        assert idle.get(server.url + "/v2/", timeout=30).status_code == 200
        os.killpg(server.proc.pid, signal.SIGINT)
        assert server.proc.wait(60) == 0
    log = server.logs()
    assert "Shutting down: Master" in log
    assert [line for line in log.splitlines() if NOISE.search(line) or "Traceback" in line] == [], log


def test_a_log_format_change_applies_on_the_next_reload(angos_factory):
    server = angos_factory()
    old = set(server.worker_pids())
    server.config_path.write_text(server.config_path.read_text() + '\n[global]\nlog_format = "json"\n')
    wait_for(lambda: "configuration reloaded" in server.logs(), timeout=30, what="the reload")
    wait_for(lambda: len(server.worker_pids()) == 2 and not set(server.worker_pids()) & old, timeout=60,
             what="the old workers to be replaced")
    mark = len(server.logs())
    assert requests.get(server.url + "/v2/reloaded/app/tags/list", timeout=30).status_code == 404

    def access_line():
        for line in server.logs()[mark:].splitlines():
            if "reloaded/app/tags/list" in line:
                return line
        return None

    doc = json.loads(wait_for(access_line, timeout=30, what="the request's access line"))
    assert doc["logger"] == "angos.access" and doc["status"] == 404, doc
