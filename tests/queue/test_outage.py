"""``angos worker`` while its Redis is down: one clear line, bounded log volume, a recovery line,
and jobs run again once Redis is back (angos.outage, angos.queue.consumer).

Before, every worker thread and scheduler logged a full traceback per poll: about 20 a second.
The worker runs with ``angos.outage`` at DEBUG, so each retry leaves a DEBUG line: the test
waits until Redis has been gone for ten seconds *and* the worker has retried at least ten
times (the loops kept trying), then counts what an operator sees at INFO and above.
"""

from __future__ import annotations

import time

from tests.conftest import wait_for
from tests.queue.conftest import QueueEnv, read_lines


def test_worker_logs_one_line_while_redis_is_down_and_one_when_it_is_back(tmp_path, redis_process):
    env = QueueEnv(tmp_path, "redis", redis_process.url)
    try:
        worker = env.worker(env={"ANGOS_LOG": "info,angos.outage=debug"})
        redis_process.stop()
        down_at = time.monotonic()
        wait_for(lambda: time.monotonic() - down_at >= 10 and worker.logs().count("still unreachable") >= 10,
                 timeout=90, what="ten seconds of retries against the stopped Redis")
        redis_process.start()  # same port, empty
        env.queue().submit("test.record", "after-outage", {"dir": str(env.out)})
        wait_for(lambda: [ln[0] for ln in read_lines(env.out / "after-outage.log")] == ["start", "end"],
                 timeout=60, what="the job submitted after Redis came back to run")
        wait_for(lambda: "is reachable again" in worker.logs(), timeout=30, what="the recovery line")
        assert worker.stop() == 0
    finally:
        env.close()

    log = worker.logs()
    assert "Traceback" not in log, log
    lines = log.splitlines()
    down = [i for i, line in enumerate(lines) if "is unreachable" in line]
    back = [i for i, line in enumerate(lines) if "is reachable again" in line]
    assert len(down) == 1 and len(back) == 1, log
    address = redis_process.url.split("//", 1)[1].split("/", 1)[0]
    assert f"WARNING angos.outage: Redis at {address} is unreachable (" in lines[down[0]], lines[down[0]]
    assert "retrying with backoff" in lines[down[0]]
    assert f"INFO angos.outage: Redis at {address} is reachable again (down for " in lines[back[0]]
    during = [line for line in lines[down[0]:back[0] + 1] if " DEBUG " not in line]
    assert len(during) < 20, "\n".join(during)
    assert sum(len(line) + 1 for line in during) < 20_000
