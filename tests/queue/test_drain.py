"""The server's in-process drain (no ``[global.job_queue]``) and ``angos worker``'s start-up check.

The drain is one supervised ``angos worker --in-process`` child of the gunicorn
master: it runs enqueued jobs, its handler metrics reach the server's /metrics,
it is restarted if it dies, and it never outlives the server."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess

import requests

from angos.config import load_config
from angos.queue.core import JobQueue
from tests.conftest import ANGOS, wait_for
from tests.queue.conftest import JOB_ENV, read_lines


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except OSError:
        return False


def _children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def drain_pids(server) -> list[int]:
    return [p for p in _children(server.pid) if "--in-process" in _cmdline(p)]


def _queue(server) -> JobQueue:
    return JobQueue(load_config([str(server.config_path)]), "replication")


def test_server_without_job_queue_runs_jobs_in_one_drain_and_shows_their_metrics(angos_factory, tmp_path):
    server = angos_factory(env=JOB_ENV)
    assert len(wait_for(lambda: drain_pids(server), what="the drain process")) == 1
    q = _queue(server)
    for i in range(3):
        assert q.submit("test.metric", f"metric-{i}", {"dir": str(tmp_path)})
    wait_for(lambda: all((tmp_path / f"metric-{i}.log").exists() for i in range(3)), what="the jobs to run")

    def scraped():
        text = requests.get(server.url + "/metrics", timeout=10).text
        runs = re.search(r'^angos_job_queue_runs_total\{outcome="succeeded",queue="replication"\} (\S+)$', text, re.M)
        test = re.search(r"^angos_test_job_runs_total (\S+)$", text, re.M)
        return runs and test and (runs.group(1), test.group(1)) == ("3.0", "3.0")

    wait_for(scraped, what="handler metrics on the server's /metrics")
    assert len(drain_pids(server)) == 1  # one consumer for the whole server, not one per gunicorn worker
    for queue in ("replication", "cache"):  # where the operator guide says pending jobs persist
        assert (server.workdir / "data" / "_jobs" / "pending" / queue / "queue.db").is_file()
    q.close()


def test_stopping_the_server_stops_its_drain(angos_factory):
    server = angos_factory(env=JOB_ENV)
    (drain,) = wait_for(lambda: drain_pids(server), what="the drain process")
    assert server.stop() == 0
    wait_for(lambda: not _running(drain), timeout=10, what="the drain to exit")


def test_a_stop_signalled_to_every_process_at_once_is_not_a_drain_crash(angos_factory):
    # systemd's default KillMode sends SIGTERM to the master and the drain together.
    server = angos_factory(env=JOB_ENV)
    (drain,) = wait_for(lambda: drain_pids(server), what="the drain process")
    os.killpg(server.pid, signal.SIGTERM)
    assert server.proc.wait(30) == 0
    wait_for(lambda: not _running(drain), timeout=10, what="the drain to exit")
    logs = server.logs()
    assert "in-process job drain stopped" in logs
    assert "exited; restarting" not in logs and " ERROR " not in logs, logs


def test_drain_exits_when_the_master_is_killed_outright(angos_factory):
    server = angos_factory(env=JOB_ENV)
    (drain,) = wait_for(lambda: drain_pids(server), what="the drain process")
    os.kill(server.pid, signal.SIGKILL)  # the master alone, not its process group
    server.proc.wait(10)
    wait_for(lambda: not _running(drain), timeout=20, what="the orphaned drain to exit")


def test_a_crashed_drain_is_restarted_and_its_running_job_runs_again(angos_factory, tmp_path):
    server = angos_factory(env=JOB_ENV)
    (first,) = wait_for(lambda: drain_pids(server), what="the drain process")
    q = _queue(server)
    q.submit("test.gate", "gated", {"dir": str(tmp_path), "name": "gated"})
    log = tmp_path / "gated.log"
    wait_for(lambda: read_lines(log), what="the job to start")
    os.kill(first, signal.SIGKILL)
    second = wait_for(lambda: [p for p in drain_pids(server) if p != first], timeout=20, what="a new drain")
    wait_for(lambda: len(read_lines(log)) == 2, what="the job to start again")
    (tmp_path / "gated.go").touch()
    wait_for(lambda: any(line[0] == "end" for line in read_lines(log)), what="the job to finish")
    assert [line[2] for line in read_lines(log)] == [str(first), str(second[0]), str(second[0])]
    q.close()


def test_worker_without_job_queue_section_fails_saying_what_to_add(tmp_path):
    config = tmp_path / "config.toml"
    config.write_text(f'[server]\nbind_address = "127.0.0.1"\n[blob_store.fs]\nroot_dir = "{tmp_path}/data"\n')
    res = subprocess.run(ANGOS + ["-c", str(config), "worker"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 1
    assert "[global.job_queue]" in res.stderr and "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def test_worker_with_a_process_local_memory_lock_is_refused_at_start_up(tmp_path):
    config = tmp_path / "config.toml"
    config.write_text(f'[server]\nbind_address = "127.0.0.1"\nworkers = 1\n[global.job_queue]\n'
                      f'[blob_store.fs]\nroot_dir = "{tmp_path}/data"\n'
                      f'[metadata_store.fs]\nroot_dir = "{tmp_path}/data"\nlock_strategy = "memory"\n')
    res = subprocess.run(ANGOS + ["-c", str(config), "worker"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 1
    assert "'memory' lock" in res.stderr and "[global.job_queue]" in res.stderr


def test_with_a_memory_lock_the_single_web_worker_runs_jobs_itself(angos_factory, tmp_path):
    server = angos_factory(env=JOB_ENV, workers=1, extra=f"""
        [metadata_store.fs]
        root_dir = "{tmp_path}/data"
        lock_strategy = "memory"
        """)
    (worker,) = wait_for(server.worker_pids, what="the web worker")
    assert drain_pids(server) == []  # no second process: the memory lock could not guard its writes
    q = _queue(server)
    q.submit("test.metric", "in-worker", {"dir": str(tmp_path)})
    wait_for(lambda: (tmp_path / "in-worker.log").exists(), what="the job to run")
    assert read_lines(tmp_path / "in-worker.log")[0][2] == str(worker)
    text = requests.get(server.url + "/metrics", timeout=10).text
    assert re.search(r"^angos_test_job_runs_total 1\.0$", text, re.M)
    q.close()
    assert server.stop() == 0


def test_sigterm_on_the_server_lets_a_running_in_process_job_finish(angos_factory, tmp_path):
    server = angos_factory(env=JOB_ENV)
    wait_for(lambda: drain_pids(server), what="the drain process")
    q = _queue(server)
    q.submit("test.record", "long", {"dir": str(tmp_path), "name": "long", "sleep": 3})
    log = tmp_path / "long.log"
    wait_for(lambda: read_lines(log), what="the job to start")
    assert server.stop(timeout=60) == 0
    assert [line[0] for line in read_lines(log)] == ["start", "end"]  # finished, not interrupted
    assert q.list_pending()[0] == []  # and not left to run again
    q.close()


def test_angos_worker_speaks_sd_notify_and_the_servers_drain_stays_quiet(angos_factory, tmp_path):
    """Type=notify units: `angos worker` reports READY=1 and STOPPING=1; the server's drain child
    inherits NOTIFY_SOCKET but must not talk (systemd accepts the main process only)."""
    import socket

    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(30)
    try:
        config = tmp_path / "config.toml"
        config.write_text(f'[server]\nbind_address = "127.0.0.1"\n[global.job_queue]\nbackend = "sqlite"\n'
                          f'[blob_store.fs]\nroot_dir = "{tmp_path}/data"\n')
        worker = subprocess.Popen(ANGOS + ["-c", str(config), "worker", "--queue", "replication"],
                                  env=dict(os.environ, NOTIFY_SOCKET=path), stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            assert sock.recv(4096).decode().split("\n") == ["READY=1", "STATUS=draining replication"]
            worker.send_signal(signal.SIGTERM)
            assert sock.recv(4096).decode() == "STOPPING=1"
            assert worker.wait(30) == 0
        finally:
            if worker.poll() is None:
                worker.kill()

        server = angos_factory(env={**JOB_ENV, "NOTIFY_SOCKET": path})
        wait_for(lambda: drain_pids(server), what="the drain process")
        assert server.stop() == 0
        messages = []
        sock.settimeout(0.5)
        with contextlib.suppress(socket.timeout):
            while True:
                messages.append(sock.recv(4096).decode())
        # The master's own messages only: READY=1 (gunicorn), STATUS, STOPPING=1; no drain READY.
        assert [m.split("\n")[0] for m in messages] == ["READY=1", f"STATUS=serving on 127.0.0.1:{server.port}",
                                                         "STOPPING=1"]
    finally:
        sock.close()
