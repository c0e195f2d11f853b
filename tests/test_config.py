"""Configuration: every kind of error is one clear line, and repeated -c merges as documented.

Error tests run the real ``angos -c FILE server`` command: it must exit 1
with exactly one line on stderr that names the file (syntax, missing file) or
the dotted key path (validation), and never a traceback. Merge tests call
:func:`angos.config.load_config` on several files: tables merge recursively,
scalars and arrays (including arrays of tables) are replaced whole.
"""

from __future__ import annotations

import os
import signal
import subprocess
import textwrap

import pytest

from angos.config import ConfigError, load_config, load_config_text

from .conftest import ANGOS, free_port

BASE = """\
[server]
bind_address = "127.0.0.1"
port = @PORT@
workers = 1

[global.access_policy]
default = "allow"

[blob_store.fs]
root_dir = "@DATA@"
"""


def run_angos(args: list[str], cwd, timeout: float = 30) -> subprocess.CompletedProcess:
    """Run ``angos ARGS``; a server that wrongly starts is killed (with its workers) at the timeout."""
    proc = subprocess.Popen(ANGOS + args, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, env={k: v for k, v in os.environ.items()
                                                        if k not in ("ANGOS_LOG", "RUST_LOG")})
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        raise AssertionError(f"angos {' '.join(args)} did not exit (it accepted the config?)\n{err}")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def write(tmp_path, name: str, text: str):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).replace("@PORT@", str(free_port()))
                    .replace("@DATA@", str(tmp_path / "data")))
    return path


def assert_one_line_error(res: subprocess.CompletedProcess, *needles: str) -> str:
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 1, res.stderr
    assert "Traceback" not in res.stderr
    assert len(lines) == 1, f"expected one line on stderr, got:\n{res.stderr}"
    for needle in needles:
        assert needle in lines[0], f"{needle!r} not in {lines[0]!r}"
    return lines[0]


# (case id, config text, substrings the single error line must contain)
CASES = [
    ("toml-syntax", BASE + "[server\nport = 1\n", ["@FILE@", "TOML"]),
    ("unknown-key", BASE.replace("bind_address", "bind_adress"),
     ["server.bind_adress", "unknown key", "did you mean 'bind_address'"]),
    ("unknown-section", BASE + "[servr]\nport = 1\n", ["servr", "did you mean 'server'"]),
    ("wrong-type", BASE.replace("workers = 1", 'workers = "four"'), ["server.workers", "integer"]),
    ("wrong-type-bool", BASE + "[global]\nimmutable_tags = \"yes\"\n", ["global.immutable_tags"]),
    ("missing-required", BASE.replace('bind_address = "127.0.0.1"\n', ""), ["server.bind_address", "missing"]),
    ("missing-blob-store", BASE.split("[blob_store.fs]")[0], ["blob_store", "missing"]),
    ("port-out-of-range", BASE.replace("port = @PORT@", "port = 70000"), ["server.port"]),
    ("bad-size", BASE + '[global]\nmax_manifest_size = "5 parsecs"\n', ["global.max_manifest_size", "5 parsecs"]),
    ("memory-lock-many-workers",
     BASE.replace("workers = 1", "workers = 3") + '[metadata_store.fs]\nroot_dir = "@DATA@"\nlock_strategy = "memory"\n',
     ["metadata_store.fs.lock_strategy", "memory", "file"]),
    ("unknown-lock-strategy", BASE + '[metadata_store.fs]\nroot_dir = "@DATA@"\nlock_strategy = "flie"\n',
     ["metadata_store.fs.lock_strategy", "flie", "file"]),
    ("two-blob-backends", BASE + '[blob_store.s3]\nbucket = "b"\n', ["blob_store", "exactly one"]),
    ("overlapping-repositories",
     BASE + '[repository."team"]\nimmutable_tags = true\n[repository."team/app"]\nimmutable_tags = false\n',
     ["team/app", "team"]),
    ("bad-regex-global", BASE + '[global]\nimmutable_tags_exclusions = ["^v[0-9"]\n',
     ["global.immutable_tags_exclusions", "regex"]),
    ("bad-regex-repository", BASE + '[repository."web"]\nimmutable_tags_exclusions = ["(unclosed"]\n',
     ["repository.web.immutable_tags_exclusions", "regex"]),
    ("zero-upload-sessions", BASE + "[global]\nmax_upload_sessions_per_namespace = 0\n",
     ["global.max_upload_sessions_per_namespace", "greater than zero"]),
    ("short-upload-idle-timeout", BASE + '[global]\nupload_session_idle_timeout = "500ms"\n',
     ["global.upload_session_idle_timeout", "at least 1s"]),
    ("bad-upload-idle-timeout", BASE + '[global]\nupload_session_idle_timeout = "soon"\n',
     ["global.upload_session_idle_timeout", "soon"]),
    ("zero-idle-probe", BASE + "[global.replication]\nidle_probe_secs = 0\n",
     ["global.replication.idle_probe_secs", "greater than zero"]),
    ("zero-backlog-refresh", BASE + "[global.replication]\nbacklog_refresh_secs = 0\n",
     ["global.replication.backlog_refresh_secs", "greater than zero"]),
    ("short-change-feed-grace", BASE + '[global.replication]\nchange_feed_grace = "200ms"\n',
     ["global.replication.change_feed_grace", "at least 1s"]),
    ("change-feed-grace-past-horizon",
     BASE + '[global.replication]\nchange_feed_grace = "2h"\ntombstone_horizon = "1h"\n',
     ["global.replication.change_feed_grace", "shorter than tombstone_horizon"]),
    ("bad-metrics-allow", BASE.replace("workers = 1", 'workers = 1\nmetrics_allow = ["localhost"]'),
     ["server.metrics_allow", "'localhost'"]),
    ("negative-storage-usage-refresh", BASE + "[global]\nstorage_usage_refresh_secs = -1\n",
     ["global.storage_usage_refresh_secs", "negative"]),
    ("shared-data-directory-not-a-bool", BASE + '[global]\nshared_data_directory = "yes"\n',
     ["global.shared_data_directory", "true or false"]),
    ("metadata-root-nothing-to-default-to", BASE.split("[blob_store.fs]")[0]
     + '[blob_store.s3]\nbucket = "b"\n\n[metadata_store.fs]\nlock_strategy = "file"\n',
     ["metadata_store.fs.root_dir", "required", "[blob_store.fs]"]),
    ("sqlite-queue-on-s3-metadata", BASE.split("[blob_store.fs]")[0]
     + '[blob_store.s3]\nbucket = "b"\n\n[metadata_store.s3]\nbucket = "b"\n[metadata_store.s3.lock_strategy.s3]\n'
     + '\n[global.job_queue]\nbackend = "sqlite"\n',
     ["global.job_queue.backend", "filesystem metadata store", "redis"]),
    ("redis-queue-without-url", BASE + '[global.job_queue]\nbackend = "redis"\n',
     ["global.job_queue.url", "required"]),
    ("zero-replication-jobs", BASE + "[global]\nmax_concurrent_replication_jobs = 0\n",
     ["global.max_concurrent_replication_jobs", "greater than zero"]),
    ("zero-concurrent-pushes", BASE + '[repository."app"]\n[[repository."app".downstream]]\nname = "peer"\n'
     'url = "http://127.0.0.1:1"\nmax_concurrent_pushes = 0\n',
     ["repository.app.downstream[0].max_concurrent_pushes", "greater than zero"]),
]


@pytest.mark.parametrize("text,needles", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_config_error_is_one_line_naming_file_or_key_and_exit_1(tmp_path, text, needles):
    path = write(tmp_path, "bad.toml", text)
    res = run_angos(["-c", str(path), "server"], tmp_path)
    assert_one_line_error(res, *[n.replace("@FILE@", str(path)) for n in needles])


def test_missing_config_file_is_one_line_naming_the_file(tmp_path):
    missing = tmp_path / "nope" / "angos.toml"
    res = run_angos(["-c", str(missing), "server"], tmp_path)
    assert_one_line_error(res, str(missing))


def test_syntax_error_in_second_config_file_names_that_file(tmp_path):
    good = write(tmp_path, "good.toml", BASE)
    bad = write(tmp_path, "override.toml", "[server]\nport = = 1\n")
    line = assert_one_line_error(run_angos(["-c", str(good), "-c", str(bad), "server"], tmp_path), str(bad))
    assert str(good) not in line


def test_error_introduced_by_an_override_file_names_the_key(tmp_path):
    good = write(tmp_path, "good.toml", BASE)
    bad = write(tmp_path, "override.toml", "[server]\nworkers = 0\n")
    assert_one_line_error(run_angos(["-c", str(good), "-c", str(bad), "server"], tmp_path), "server.workers")


# ------------------------------------------------------------------ merging


def test_later_file_merges_tables_recursively_and_replaces_scalars(tmp_path):
    a = write(tmp_path, "a.toml", BASE + """
        [global]
        max_manifest_size = "1MiB"
        immutable_tags = true

        [repository."alpha"]
        immutable_tags = true
        """)
    b = write(tmp_path, "b.toml", """
        [server]
        port = 9001

        [global]
        immutable_tags = false

        [repository."beta"]
        immutable_tags = true
        """)
    cfg = load_config([str(a), str(b)])
    assert cfg.server.port == 9001
    assert cfg.server.bind_address == "127.0.0.1"          # kept from a.toml
    assert cfg.server.workers == 1
    assert cfg.global_.immutable_tags is False
    assert cfg.global_.max_manifest_size == 1024 * 1024    # kept from a.toml
    assert set(cfg.repository) == {"alpha", "beta"}
    assert cfg.repository["alpha"].immutable_tags is True
    assert cfg.sources == (str(a), str(b))


def test_later_file_replaces_arrays_whole(tmp_path):
    a = write(tmp_path, "a.toml", BASE + """
        [global]
        immutable_tags_exclusions = ["^latest$", "^dev-"]

        [[repository."web".downstream]]
        name = "one"
        url = "http://one.example"

        [[repository."web".downstream]]
        name = "two"
        url = "http://two.example"
        """)
    b = write(tmp_path, "b.toml", """
        [global]
        immutable_tags_exclusions = ["^nightly$"]

        [[repository."web".downstream]]
        name = "three"
        url = "http://three.example"
        """)
    cfg = load_config([str(a), str(b)])
    assert cfg.global_.immutable_tags_exclusions == ("^nightly$",)
    assert [d.name for d in cfg.repository["web"].downstream] == ["three"]


def test_table_replaces_scalar_and_scalar_replaces_table(tmp_path):
    a = write(tmp_path, "a.toml", BASE.replace("workers = 1", "workers = 1") + """
        [metadata_store.fs]
        root_dir = "@DATA@"
        lock_strategy = "memory"
        """)
    b = write(tmp_path, "b.toml", """
        [metadata_store.fs.lock_strategy.redis]
        url = "redis://127.0.0.1:6379/0"
        """)
    cfg = load_config([str(a), str(b)])
    assert cfg.metadata.lock_strategy.kind == "redis"
    assert cfg.metadata.lock_strategy.redis.url == "redis://127.0.0.1:6379/0"
    assert cfg.metadata.fs.root_dir == str(tmp_path / "data")  # sibling key survives the merge

    c = write(tmp_path, "c.toml", '[metadata_store.fs]\nlock_strategy = "file"\n')
    cfg = load_config([str(a), str(b), str(c)])
    assert cfg.metadata.lock_strategy.kind == "file"


def test_merge_happens_before_validation(tmp_path):
    # Neither file is valid alone: a lacks bind_address, b lacks everything else.
    a = write(tmp_path, "a.toml", BASE.replace('bind_address = "127.0.0.1"\n', ""))
    b = write(tmp_path, "b.toml", '[server]\nbind_address = "::1"\n')
    with pytest.raises(ConfigError, match="server.bind_address"):
        load_config([str(a)])
    assert load_config([str(a), str(b)]).server.bind_address == "::1"


def test_a_metadata_fs_table_without_root_dir_uses_the_blob_store_root(tmp_path):
    path = write(tmp_path, "c.toml", BASE + '\n[metadata_store.fs]\nlock_strategy = "memory"\n')
    cfg = load_config([str(path)])
    assert cfg.metadata.fs.root_dir == str(tmp_path / "data")
    assert cfg.metadata.lock_strategy.kind == "memory"
    explicit = write(tmp_path, "d.toml", BASE + f'\n[metadata_store.fs]\nroot_dir = "{tmp_path / "meta"}"\n')
    assert load_config([str(explicit)]).metadata.fs.root_dir == str(tmp_path / "meta")


def test_the_memory_lock_runs_one_worker_unless_workers_is_set():
    # The seed guide: the in-process mode "works with any lock strategy". A process-local lock
    # coordinates one process, so with it the server runs one worker by default.
    s3 = ('[server]\nbind_address = "127.0.0.1"\n\n[blob_store.s3]\nbucket = "b"\n\n'
          '[metadata_store.s3]\nbucket = "b"\n')  # no lock_strategy: S3's default is "memory"
    cfg = load_config_text(s3)
    assert (cfg.metadata.lock_strategy.kind, cfg.server.workers) == ("memory", 1)
    fs = '[server]\nbind_address = "127.0.0.1"\n\n[blob_store.fs]\nroot_dir = "/tmp/x"\n'
    assert load_config_text(fs).server.workers == (os.cpu_count() or 1)  # the file lock: every CPU
    chosen = load_config_text(fs + '\n[metadata_store.fs]\nlock_strategy = "memory"\n')
    assert chosen.server.workers == 1
    assert load_config_text(fs.replace('"127.0.0.1"\n', '"127.0.0.1"\nworkers = 1\n', 1)
                            + '\n[metadata_store.fs]\nlock_strategy = "memory"\n').server.workers == 1
