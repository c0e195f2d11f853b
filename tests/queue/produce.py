"""A job producer in a process of its own, as another box's web worker would be.

    python -m tests.queue.produce CONFIG KIND LOCK_KEY PAYLOAD_JSON [--threads N] [--count N]
                                  [--every SECONDS] [--go FILE]

Opens one :class:`~angos.queue.core.JobQueue` on the ``replication`` queue with this
process's own environment (its ``$ANGOS_JOBS_DIR`` is the box), prints ``ready`` once
the queue is open, waits for ``FILE`` to exist when ``--go`` is given (so several
producers start submitting together), then each of ``N`` threads submits ``--count``
times, ``--every`` seconds apart. Every result is printed as ``submitted True`` or
``submitted False`` (a new job, or coalesced into a pending one).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time

from angos.config import load_config
from angos.queue.core import JobQueue


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("config")
    p.add_argument("kind")
    p.add_argument("lock_key")
    p.add_argument("payload")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--count", type=int, default=1)
    p.add_argument("--every", type=float, default=0.0)
    p.add_argument("--go")
    args = p.parse_args()
    q = JobQueue(load_config([args.config]), "replication")
    payload = json.loads(args.payload)
    print("ready", flush=True)
    while args.go and not os.path.exists(args.go):
        time.sleep(0.002)  # the start line: poll often, so producers begin within milliseconds of each other
    barrier = threading.Barrier(args.threads)
    out_lock = threading.Lock()

    def produce():
        barrier.wait()
        for i in range(args.count):
            created = q.submit(args.kind, args.lock_key, payload)
            with out_lock:
                print(f"submitted {created}", flush=True)
            if args.every and i + 1 < args.count:
                time.sleep(args.every)  # spaced enqueues: some land while a run of the key is in progress

    threads = [threading.Thread(target=produce) for _ in range(args.threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    q.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
