"""Every Prometheus metric Angos exports, declared in one place.

Declarations only. Under gunicorn the server sets ``PROMETHEUS_MULTIPROC_DIR``
before any worker starts, so values from every worker process (and the
in-process job drain) are aggregated on ``/metrics``.
"""

from prometheus_client import Counter, Gauge, Histogram

HTTP_REQUESTS = Counter("http_requests_total", "HTTP requests by method, route (action) and status",
                        ["method", "route", "status"])
HTTP_DURATION = Histogram("http_request_duration_seconds", "HTTP request duration in seconds",
                          ["method", "route"],
                          buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))
HTTP_IN_FLIGHT = Gauge("http_requests_in_flight", "HTTP requests being served", multiprocess_mode="livesum")

AUTH_ATTEMPTS = Counter("auth_attempts_total", "Authentication attempts", ["method", "result"])
AUTH_TOKEN_REQUESTS = Counter("auth_token_requests_total", "GET /token answers: identified, anonymous, "
                              "failure (wrong credentials), throttled", ["result"])
AUTH_TOKEN_VERIFICATIONS = Counter("auth_token_verifications_total", "Bearer tokens checked: valid, invalid, "
                                   "expired, revoked", ["result"])
# Labels are bound for every configured provider and result at the first OIDC check (angos.auth.oidc).
AUTH_OIDC_VERIFICATIONS = Counter("auth_oidc_verifications_total", "OIDC tokens checked, by provider and result: "
                                  "valid, invalid, expired, wrong_claims, unknown_key, unavailable",
                                  ["provider", "result"])
# Authorization webhooks (angos.auth.webhook_authz): calls made and answers served from the cache.
AUTH_WEBHOOK_REQUESTS = Counter("auth_webhook_requests_total", "Authorization webhook decisions by webhook and "
                                "result (allow, deny, unavailable, transport_error, cached_allow, cached_deny)",
                                ["webhook", "result"])
AUTH_WEBHOOK_DURATION = Histogram("auth_webhook_duration_seconds", "Authorization webhook calls (not cached "
                                  "answers) in seconds, failures included", ["webhook"],
                                  buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))

LOCK_ACQUISITIONS = Counter("lock_acquisitions_total", "Metadata lock acquisitions", ["backend", "result"])
LOCK_DURATION = Histogram("lock_acquisition_duration_seconds", "Time to acquire a metadata lock in seconds",
                          ["backend"],
                          buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5))

# Replication (angos.replication). The draining process creates every configured downstream's
# push, last-success and sent-bytes series at start-up (angos.replication.watch), so a downstream
# that never answered still has them: at 0.
REPLICATION_PUSH_OUTCOMES = ("pushed", "converged", "superseded", "unsupported", "failed", "deferred")
REPLICATION_PUSH = Counter("angos_replication_push_total", "Replication pushes and deletes by downstream and outcome",
                           ["downstream", "outcome"])
# "max": a restarted drain starts at 0 and must not hide the last success its predecessor saw.
REPLICATION_LAST_SUCCESS = Gauge("angos_replication_last_success_timestamp_seconds",
                                 "Unix time of the last pushed/converged/superseded replication per downstream "
                                 "(0: none since the server started)", ["downstream"], multiprocess_mode="max")
REPLICATION_SENT_BYTES = Counter("angos_replication_sent_bytes_total", "Blob and manifest bytes the downstream "
                                 "accepted from replication (mounted and present blobs send nothing)", ["downstream"])
REPLICATION_CONFLICTS = Counter("angos_replication_conflicts_total", "Writes last-writer-wins dropped, by peer "
                                "(the downstream on the sender side, the losing write's origin on the receiver "
                                "side) and side (sender, receiver)", ["downstream", "side"])
REPLICATION_RECONCILE = Counter("angos_replication_reconcile_total", "Reconcile probe results", ["outcome"])
REPLICATION_DOWNSTREAM_UP = Gauge("angos_replication_downstream_up", "1 while the drain can reach the downstream, "
                                  "0 while it is down and its jobs wait for it", ["downstream"],
                                  multiprocess_mode="livemostrecent")
# Computed from the replication queue by one server process at a time (angos.replication.backlog):
# the most recent live value is the answer, and a dead publisher's values disappear with it.
REPLICATION_BACKLOG = Gauge("angos_replication_backlog", "Replication jobs waiting or running per downstream",
                            ["downstream"], multiprocess_mode="livemostrecent")
REPLICATION_OLDEST_PENDING = Gauge("angos_replication_oldest_pending_seconds", "Age of the oldest replication job "
                                   "still waiting per downstream (0 when none waits)", ["downstream"],
                                   multiprocess_mode="livemostrecent")
REPLICATION_DEAD_LETTERS = Gauge("angos_replication_dead_letters", "Dead-lettered replication jobs per downstream",
                                 ["downstream"], multiprocess_mode="livemostrecent")
# The last `angos replicate` runs, read from their record on the metadata store (angos.replication.runs).
RECONCILE_LAST_RUN = Gauge("angos_replication_reconcile_last_run_timestamp_seconds",
                           "Unix time the last angos replicate run finished (0: never)",
                           multiprocess_mode="livemostrecent")
RECONCILE_LAST_SUCCESS = Gauge("angos_replication_reconcile_last_success_timestamp_seconds",
                               "Unix time the last angos replicate run finished with exit code 0 (0: never)",
                               multiprocess_mode="livemostrecent")
RECONCILE_FAILURES = Gauge("angos_replication_reconcile_consecutive_failures",
                           "angos replicate runs in a row that exited non-zero (0 after a clean run)",
                           multiprocess_mode="livemostrecent")

# Job queue (angos.queue). Gauges are refreshed by one server process at a time
# (see angos.queue.gauges), so the most recent live value is the answer.
JOB_QUEUE_PENDING = Gauge("angos_job_queue_pending", "Pending jobs ready within pending_ready_horizon_secs "
                          "(saturates at 10000)", ["queue"], multiprocess_mode="livemostrecent")
JOB_QUEUE_FAILED = Gauge("angos_job_queue_failed", "Dead-lettered jobs (saturates at 10000)", ["queue"],
                         multiprocess_mode="livemostrecent")
JOB_QUEUE_ENQUEUED = Counter("angos_job_queue_enqueued_total", "Jobs submitted; dedup=hit means the lock_key "
                             "was already pending and nothing new was queued", ["queue", "dedup"])
JOB_QUEUE_ENQUEUE_FAILURES = Counter("angos_job_queue_enqueue_failures_total", "Enqueues that failed (logged)",
                                     ["queue"])
JOB_RUNS = Counter("angos_job_queue_runs_total", "Job runs by outcome (succeeded, retried, deferred, "
                   "folded, dead_lettered, lost)", ["queue", "outcome"])
JOB_DURATION = Histogram("angos_job_queue_run_duration_seconds", "Time spent running one job", ["queue"],
                         buckets=(0.005, 0.025, 0.1, 0.5, 1, 5, 30, 120, 600))

# Pull-through cache (angos.cache).
CACHE_REQUESTS = Counter("angos_cache_requests_total", "Pull-through reads by repository, kind (manifest, blob) "
                         "and result (hit, miss, revalidated, stale, failed)", ["repository", "kind", "result"])
CACHE_UPSTREAM_BYTES = Counter("angos_cache_upstream_bytes_total", "Manifest and blob bytes fetched from upstreams",
                               ["repository"])
CACHE_UPSTREAM_DURATION = Histogram("angos_cache_upstream_request_duration_seconds",
                                    "Time until an upstream answered a request (its headers)",
                                    ["repository", "method"],
                                    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
CACHE_FILLS_IN_PROGRESS = Gauge("angos_cache_fills_in_progress", "Blobs being fetched from an upstream into storage",
                                multiprocess_mode="livesum")

# Event webhooks (angos.events): one count and one duration per delivery attempt, wherever it runs (a web
# worker for required/optional webhooks, the draining process for async ones).
EVENT_WEBHOOK_DELIVERIES = Counter("angos_event_webhook_deliveries_total", "Event webhook delivery attempts by "
                                   "webhook and outcome (delivered, failed, unreachable)", ["webhook", "outcome"])
EVENT_WEBHOOK_DURATION = Histogram("angos_event_webhook_delivery_duration_seconds", "Time one event webhook "
                                   "delivery attempt took, until the receiver answered or the attempt failed",
                                   ["webhook"],
                                   buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))

CHANGE_FEED_WRITE_FAILURES = Counter("angos_change_feed_write_failures_total",
                                     "Tag changes the change feed could not record (logged; the write itself succeeded)")

# What runs: 1, labelled with the version (join on it to see which servers run which release).
BUILD_INFO = Gauge("angos_build_info", "Always 1; the version label is the running Angos version", ["version"],
                   multiprocess_mode="max")

# Bytes through the OCI API per configured repository key ("_other" for namespaces no repository
# claims): bounded by the configuration, whatever names clients use (angos.api.observability).
PUSHED_BYTES = Counter("angos_pushed_bytes", "Request body bytes received by blob uploads and manifest "
                       "pushes, per configured repository", ["repository"])
PULLED_BYTES = Counter("angos_pulled_bytes", "Blob and manifest bytes answered to GET requests (not those "
                       "served by a redirect to S3), per configured repository", ["repository"])

# The blob store's size, counted every [global] storage_usage_refresh_secs by one server process
# (angos.storage_usage). "mostrecent": the last count stays visible when its counter exits.
STORAGE_BLOBS = Gauge("angos_storage_blobs", "Blobs in the blob store at the last count",
                      multiprocess_mode="mostrecent")
STORAGE_BLOB_BYTES = Gauge("angos_storage_blob_bytes", "Bytes of the blobs in the blob store at the last count",
                           multiprocess_mode="mostrecent")
STORAGE_SCAN_DURATION = Gauge("angos_storage_scan_duration_seconds", "How long the last count of the blob "
                              "store took", multiprocess_mode="mostrecent")

# Process and Python runtime series summed over the server's processes (angos.process_metrics).
# registry=None: they are read from the multiprocess files only, and must not collide with the
# ProcessCollector a process without PROMETHEUS_MULTIPROC_DIR registers under the same names.
PROCESS_RESIDENT_MEMORY = Gauge("process_resident_memory_bytes", "Resident memory size in bytes, summed over "
                                "the server's worker processes", multiprocess_mode="livesum", registry=None)
PROCESS_VIRTUAL_MEMORY = Gauge("process_virtual_memory_bytes", "Virtual memory size in bytes, summed over the "
                               "server's worker processes", multiprocess_mode="livesum", registry=None)
PROCESS_OPEN_FDS = Gauge("process_open_fds", "Open file descriptors, summed over the server's worker processes",
                         multiprocess_mode="livesum", registry=None)
PROCESS_MAX_FDS = Gauge("process_max_fds", "The lowest per-process limit on open file descriptors",
                        multiprocess_mode="livemin", registry=None)
PROCESS_START_TIME = Gauge("process_start_time_seconds", "Start time of the server's first worker process since "
                           "unix epoch in seconds", multiprocess_mode="min", registry=None)
PROCESS_CPU = Counter("process_cpu_seconds", "User and system CPU time spent in seconds by the server's worker "
                      "processes, those that exited included", registry=None)
PYTHON_GC_COLLECTED = Counter("python_gc_objects_collected", "Objects collected during gc", ["generation"],
                              registry=None)
PYTHON_GC_UNCOLLECTABLE = Counter("python_gc_objects_uncollectable", "Uncollectable objects found during GC",
                                  ["generation"], registry=None)
PYTHON_GC_COLLECTIONS = Counter("python_gc_collections", "Number of times this generation was collected",
                                ["generation"], registry=None)
PYTHON_INFO = Gauge("python_info", "Python platform information",
                    ["implementation", "major", "minor", "patchlevel", "version"], multiprocess_mode="max",
                    registry=None)


def _seed_process_limits() -> None:
    """Set this process's start time and fd limit as soon as the gauges exist. In multiprocess mode
    an unlabelled gauge starts at 0 in every process that imports this module, and a 0 would be the
    minimum these two series report until (or, for a process that exits first, long after) the
    process publishes its own values (angos.process_metrics)."""
    from prometheus_client import ProcessCollector

    try:
        for family in ProcessCollector(registry=None).collect():
            for sample in family.samples:
                if sample.name == "process_start_time_seconds":
                    PROCESS_START_TIME.set(sample.value)
                elif sample.name == "process_max_fds":
                    PROCESS_MAX_FDS.set(sample.value)
    except OSError:  # no /proc: the series stay as prometheus_client made them
        pass


_seed_process_limits()
