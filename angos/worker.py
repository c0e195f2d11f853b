"""``angos worker [--queue replication|cache|webhooks]... [--poll-interval 50ms]``: drain the job queues.

Requires ``[global.job_queue]``: with it the server only enqueues and one or
more workers (on any host sharing the queue backend) run the jobs. Without
``--queue`` every queue is drained, each on its own pool. ``--poll-interval``
is how often an idle SQLite worker looks for due jobs (and the scheduler
tick); the default of 50 ms keeps enqueue→start latency low at well under 1%
CPU. Redis workers block on the queue and start jobs at once.

Job kinds come from :data:`JOB_MODULES` (packages that register handlers with
``angos.queue.kinds``) plus ``$ANGOS_JOB_MODULES``.

The worker reloads its configuration files when they change: handlers see the
new configuration from the next job on (a file that fails validation is
logged and ignored); queue storage and pool sizes need a restart.

``--metrics-address HOST:PORT`` serves this worker's own ``/metrics`` there
(Prometheus text: the replication push counters, last success, sent bytes and
``angos_replication_downstream_up``, job runs), for a Prometheus to scrape: with
``[global.job_queue]`` those live in the workers, not in the server. Give each
worker on a host its own port.

``--in-process`` is internal: the server starts the worker that way as its
in-process drain when ``[global.job_queue]`` is absent (it then uses the
queue defaults and exits when the server does).
"""

from __future__ import annotations

import argparse
import logging
import os

from .digits import count
from .oci.errors import AngosError
from .queue.envelope import QUEUES

log = logging.getLogger("angos.worker")

# Modules that register job kinds; replication and cache add themselves here.
JOB_MODULES: tuple[str, ...] = ("angos.replication.tasks", "angos.cache.tasks", "angos.events.tasks")

DEFAULT_POLL = "50ms"


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--queue", action="append", choices=QUEUES, dest="queues", metavar="{replication,cache,webhooks}",
                   help="queue to drain (repeatable; default: all)")
    p.add_argument("--poll-interval", default=DEFAULT_POLL, metavar="DURATION",
                   help=f"idle poll and scheduler interval, e.g. 50ms or 1s (default {DEFAULT_POLL})")
    p.add_argument("--metrics-address", metavar="HOST:PORT",
                   help="serve this worker's Prometheus /metrics on HOST:PORT (e.g. 127.0.0.1:9102)")
    p.add_argument("--in-process", action="store_true", help=argparse.SUPPRESS)


def run(args, config_paths) -> int:
    from .config import load_config, parse_duration
    from .logs import use_format
    from .queue.consumer import run_consumers
    from .queue.layout import jobs_dir

    try:
        poll = parse_duration(args.poll_interval, examples="50ms, 500ms or 2s")
    except ValueError as exc:
        raise AngosError(f"--poll-interval: {exc}") from None
    if poll <= 0:
        raise AngosError("--poll-interval: must be greater than zero")
    from .reload import file_state

    paths = [os.path.abspath(p) for p in config_paths]
    stamp = file_state(paths)  # before reading, so an edit during start-up is still noticed
    cfg = load_config(config_paths)
    use_format(cfg.global_.log_format)
    parent = None
    if args.in_process:
        parent = int(os.environ.get("ANGOS_DRAIN_PARENT", os.getppid()))
        if cfg.metadata.fs is None and cfg.global_.job_queue is None:
            log.info("in-process jobs are kept in the S3 metadata store under _jobs/; this box's wake-ups in %s "
                     "(set ANGOS_JOBS_DIR to move them)", jobs_dir(cfg))
    elif cfg.global_.job_queue is None:
        raise AngosError("angos worker needs a [global.job_queue] section in the configuration (for example "
                         "[global.job_queue] with backend = \"sqlite\", or backend = \"redis\" and url = "
                         "\"redis://host:6379/0\"); without it the server drains the queues itself")
    queues = tuple(dict.fromkeys(args.queues or QUEUES))
    from . import __version__, process_metrics
    from . import metrics as m

    m.BUILD_INFO.labels(__version__).set(1)  # on --metrics-address too
    process_metrics.start()  # the in-process drain's memory and CPU count on the server's /metrics
    if getattr(args, "metrics_address", None):
        serve_metrics(args.metrics_address)
    return run_consumers(cfg, queues, poll, JOB_MODULES, parent_pid=parent,
                         config_paths=paths, config_stamp=stamp)


def serve_metrics(address: str) -> None:
    """Serve this process's metrics on ``HOST:PORT`` (a daemon thread); a bad or busy address fails
    start-up with one line."""
    host, sep, port = address.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not 0 < (count(port) or 0) < 65536:
        raise AngosError(f"--metrics-address: expected HOST:PORT, got {address!r}")
    from prometheus_client import start_http_server

    try:
        start_http_server(int(port), addr=host)
    except OSError as exc:
        raise AngosError(f"--metrics-address: cannot listen on {address} ({exc.strerror})") from None
    log.info("serving metrics on http://%s/metrics", address)
