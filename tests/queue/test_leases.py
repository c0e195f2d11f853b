"""README ("Guarantees", crashes): a running job holds a lease its worker renews. If the worker
is killed the job runs again: at once when a worker on the same host starts (it can see the old
process is gone), otherwise when the 30 s lease runs out. The lost run counts as an attempt, so
a job that kills its worker every time ends up dead-lettered instead of looping.

Real ``angos worker`` processes on a Redis queue (what several hosts share). "Another host" is a
worker in its own UTS and PID namespaces (:data:`~tests.queue.conftest.OTHER_HOST`): the
owner string of its jobs names another machine, so no worker here may take the shortcut.
"""

from __future__ import annotations

import pytest

from angos.queue.core import LEASE_SECS
from tests.conftest import wait_for
from tests.queue.conftest import OTHER_HOST, QueueEnv, read_lines


@pytest.fixture
def renv(tmp_path, redis_server):
    env = QueueEnv(tmp_path, "redis", redis_server)
    yield env
    env.close()


@pytest.mark.slow  # waits out the real 30 s lease
def test_a_job_of_a_worker_killed_on_another_host_runs_again_when_its_lease_runs_out(renv):
    q = renv.queue()
    log = renv.out / "held.log"
    q.submit("test.hold", "held", {"dir": str(renv.out), "name": "held"})
    other = renv.worker(wrap=OTHER_HOST)
    wait_for(lambda: read_lines(log), what="the job to start on the other host")
    ((job, owner, lease),) = q.store.running()
    assert owner.split("/")[0].startswith("angos-other-host:")  # its owner names another machine
    other.kill()  # SIGKILL mid-job: the lease stays as last renewed
    (renv.out / "held.go").touch()  # the rerun may finish
    here = renv.worker()
    wait_for(lambda: any(line[0] == "end" for line in read_lines(log)), timeout=LEASE_SECS + 60,
             what="the job to run again here")
    first, rerun, end = read_lines(log)
    assert first[3] == "0" and rerun[3] == "1"  # the lost run was counted as an attempt
    assert float(rerun[1]) >= lease  # not before the dead owner's lease ran out ...
    assert lease - float(first[1]) <= LEASE_SECS + 1  # ... which was the 30 s lease, not longer
    assert rerun[2] == end[2] != first[2]
    wait_for(lambda: q.list_pending() == ([], None), what="an empty queue")
    assert q.list_failed() == ([], None)
    assert here.stop() == 0


def test_a_job_that_kills_its_worker_every_time_ends_dead_lettered(renv):
    renv.configure("max_attempts = 3\n")
    q = renv.queue()
    log = renv.out / "doomed.log"
    q.submit("test.suicide", "doomed", {"dir": str(renv.out), "name": "doomed"})
    pids = []
    # Each worker dies running the job; the next one (same host) sees the dead owner at once,
    # counts the lost run and runs it again, until the attempts are spent.
    while not q.list_failed()[0]:
        assert len(pids) <= 4, "the job kept running after its attempts were spent"
        w = renv.worker(ready=False)  # it may die running the job before it logs that it drains
        pids.append(w.pid)
        wait_for(lambda w=w: w.proc.poll() is not None or q.list_failed()[0], timeout=60,
                 what="the worker to die running the job, or the job to be dead-lettered")
        if w.proc.poll() is None:
            assert w.stop() == 0
    attempts = read_lines(log)
    assert [line[3] for line in attempts] == ["0", "1", "2"]  # three runs, each one counted
    assert [line[2] for line in attempts] == [str(p) for p in pids[:3]]
    ((failed,), _) = q.list_failed()
    assert failed["attempts"] == 3 and "stopped before it finished" in failed["last_error"]
    assert q.list_pending() == ([], None)
