"""Configuration: load TOML files, merge them, validate into frozen dataclasses.

Contract:
- ``load_config(paths)`` reads every file in order and merges them (tables
  merge recursively; scalars and arrays from a later file replace earlier ones
  whole), then builds a :class:`Config`.
- Every problem raises :class:`ConfigError` whose message names the file (TOML
  syntax) or the dotted key path (validation), e.g.
  ``server.port: expected an integer, got 'abc'``. Unknown keys are errors with
  a "did you mean" hint.
- The result is immutable; reloading builds a new object.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

# The [auth] tables and the value checks every table shares live in their own modules. ConfigError and
# the unit parsers stay importable from here, where the rest of the code looks for them.
from .config_auth import AuthConfig
from .config_values import (ConfigError, _fail, _networks, _one_of, _positive, _regexes,  # noqa: F401
                            _webhook_token, check, parse_duration, parse_size)

INSTANCE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")


def _instance_name(value):
    if not INSTANCE_NAME.fullmatch(value):
        raise ValueError(f"expected 1-63 letters, digits, '.', '_' or '-' starting with a letter or digit, "
                         f"got {value!r}")
    return value


def default_instance_name() -> str:
    """The host name made into a valid instance name (its first label when it is longer than 63)."""
    import socket

    name = re.sub(r"[^A-Za-z0-9._-]", "-", socket.gethostname()).lstrip("._-")
    if len(name) > 63:
        name = name.split(".", 1)[0][:63]
    return name if INSTANCE_NAME.fullmatch(name) else "angos"

# ---------------------------------------------------------------- sections


@dataclass(frozen=True)
class TlsConfig:
    server_certificate_bundle: str
    server_private_key: str
    client_ca_bundle: str | None = None
    client_auth: str = field(default="optional", metadata=check(_one_of("optional", "required")))


@dataclass(frozen=True)
class ServerConfig:
    bind_address: str
    port: int = field(default=8000, metadata=check(lambda p: p if 0 < p < 65536 else _fail("must be 1-65535")))
    workers: int = field(default_factory=lambda: os.cpu_count() or 1, metadata=check(_positive))
    query_timeout: int = field(default=3600, metadata=check(_positive))
    keepalive_secs: int = field(default=75, metadata=check(_positive))
    shutdown_drain_secs: int = field(default=30, metadata=check(_positive))
    # Slow or idle clients (angos.connlimits): a new connection must deliver its request
    # head within header_timeout_secs; a request body or response write that makes no
    # progress for body_timeout_secs ends the connection; one client address may hold at
    # most max_connections_per_ip connections per worker process.
    header_timeout_secs: int = field(default=20, metadata=check(_positive))
    body_timeout_secs: int = field(default=60, metadata=check(_positive))
    max_connections_per_ip: int = field(default=64, metadata=check(_positive))
    # Networks whose clients may read /metrics without credentials (angos.api.gate); anyone else
    # gets what the access policy says about the "metrics" action. [] leaves it all to the policy.
    metrics_allow: tuple = field(default_factory=lambda: _networks(("127.0.0.1/32", "::1/128")),
                                 metadata=check(_networks))
    # One angos.access line per request (angos.server_log); false leaves only the other logs.
    access_log: bool = True
    tls: TlsConfig | None = None


@dataclass(frozen=True)
class AccessPolicy:
    default: str = field(default="deny", metadata=check(_one_of("allow", "deny")))
    rules: tuple[str, ...] = ()


@dataclass(frozen=True)
class RetentionPolicy:
    rules: tuple[str, ...] = ()


@dataclass(frozen=True)
class JobQueueConfig:
    backend: str = field(default="sqlite", metadata=check(_one_of("sqlite", "redis")))
    url: str | None = None
    max_attempts: int = field(default=5, metadata=check(_positive))
    retry_backoff_min_ms: int = field(default=100, metadata=check(_positive))
    retry_backoff_max_ms: int = field(default=10000, metadata=check(_positive))
    pending_refresh_interval_secs: int = field(
        default=15, metadata=check(lambda v: v if v >= 5 else _fail("must be at least 5")))
    pending_ready_horizon_secs: int = field(default=600, metadata=check(_positive))
    drain_timeout_secs: int = field(default=60, metadata=check(_positive))


@dataclass(frozen=True)
class ReplicationSettings:
    """``[global.replication]``: how replication retries, waits out outages and remembers deletes.
    Applies in every mode (in-process drain, ``angos worker``, ``angos replicate``)."""
    # Rejections a retry cannot change (4xx other than 408/429) count toward max_attempts;
    # outages (refused, timed out, 5xx, 429, 408) never do.
    # Unset: [global.job_queue]'s values (or their defaults), so one table still tunes both queues.
    max_attempts: int | None = field(default=None, metadata=check(_positive))
    retry_backoff_min_ms: int | None = field(default=None, metadata=check(_positive))
    retry_backoff_max_ms: int | None = field(default=None, metadata=check(_positive))
    # A downstream that is down is probed once per interval, growing from min to max.
    outage_probe_min_ms: int = field(default=500, metadata=check(_positive))
    outage_probe_max_ms: int = field(default=10000, metadata=check(_positive))
    probe_timeout_secs: int = field(default=5, metadata=check(_positive))
    # The drain probes a downstream no job has reached for this long (and each one at start-up),
    # so angos_replication_downstream_up is true of a downstream that gets no traffic.
    idle_probe_secs: int = field(default=30, metadata=check(_positive))
    # How often a server recomputes angos_replication_backlog / _oldest_pending_seconds.
    backlog_refresh_secs: int = field(default=15, metadata=check(_positive))
    tombstone_horizon: float = field(default=30 * 86400.0, metadata={
        "parse": parse_duration, "check": lambda v: v if v >= 3600 else _fail("must be at least 1h")})
    # How long the loser of a last-writer-wins conflict is kept from retention (and so from blob
    # GC) after the conflict was recorded; "0s" protects nothing (angos.replication.conflicts).
    conflict_protection: float = field(default=7 * 86400.0, metadata={"parse": parse_duration})
    # The longest ``?wait=`` a replication status request may hold (longer asks are cut to this).
    max_status_wait_secs: int = field(default=300, metadata=check(
        lambda v: v if 0 < v <= 3600 else _fail("must be 1-3600")))
    # How far back a reader of the change feed re-reads (angos.replication.changefeed): longer
    # than any feed write takes to land plus the clock skew between hosts sharing the store.
    change_feed_grace: float = field(default=120.0, metadata={
        "parse": parse_duration, "check": lambda v: v if v >= 1 else _fail("must be at least 1s")})


@dataclass(frozen=True)
class GlobalConfig:
    # This instance's name in replicated writes' origin and in conflict records (default: the host name).
    instance_name: str = field(default_factory=default_instance_name, metadata=check(_instance_name))
    max_concurrent_requests: int = field(default=1000, metadata=check(_positive))
    max_concurrent_cache_jobs: int = field(default=4, metadata=check(_positive))
    max_concurrent_replication_jobs: int = field(default=4, metadata=check(_positive))
    max_manifest_size: int = field(default=5 * 1024 * 1024, metadata={"parse": parse_size, "check": _positive})
    max_blob_size: int = field(default=100 * 1024**3, metadata={"parse": parse_size, "check": _positive})
    # Blobs plus child manifests one manifest may list (each costs a reference marker per push).
    max_manifest_references: int = field(default=4096, metadata=check(_positive))
    update_pull_time: bool = False
    enable_blob_redirect: bool = True
    enable_manifest_redirect: bool = True
    immutable_tags: bool = False
    immutable_tags_exclusions: tuple[str, ...] = field(default=(), metadata=check(_regexes))
    allow_missing_manifest_references: bool = True
    # Open upload sessions (POST .../blobs/uploads/) per namespace; more answer 429 TOOMANYREQUESTS.
    max_upload_sessions_per_namespace: int = field(default=1000, metadata=check(_positive))
    # A session nothing was written to for this long is gone (BLOB_UPLOAD_UNKNOWN) and its bytes removed.
    upload_session_idle_timeout: float = field(default=3600.0, metadata={
        "parse": parse_duration, "check": lambda v: v if v >= 1 else _fail("must be at least 1s")})
    trusted_proxies: tuple = field(default=(), metadata=check(_networks))
    # An [auth.webhook.<name>] asked after the access policy allows ("" or unset: none).
    authorization_webhook: str | None = None
    # Line format of every command's log (angos.logs); $ANGOS_LOG_FORMAT overrides it.
    log_format: str = field(default="text", metadata=check(_one_of("text", "json")))
    # Absent means "no global policy" (only repository policies apply); a present
    # table without `default` denies unless a rule allows (secure by default).
    access_policy: AccessPolicy | None = None
    retention_policy: RetentionPolicy = field(default_factory=RetentionPolicy)
    job_queue: JobQueueConfig | None = None
    replication: ReplicationSettings = field(default_factory=ReplicationSettings)
    # [event_webhook.<name>] tables reporting on every repository (a repository's own list replaces it).
    event_webhooks: tuple[str, ...] = ()
    # Threads draining the webhooks queue (async event webhook deliveries) per draining process.
    max_concurrent_webhook_jobs: int = field(default=4, metadata=check(_positive))
    # Several servers with different repositories or downstreams on one filesystem data directory
    # share one job queue and undo each other's work: start-up refuses that (angos.instance)
    # unless the directory is shared on purpose.
    shared_data_directory: bool = False
    # How often one server process counts the blob store for angos_storage_blobs / _blob_bytes
    # (angos.storage_usage); 0 turns the scan off.
    storage_usage_refresh_secs: int = field(default=300, metadata=check(
        lambda v: v if v >= 0 else _fail("must not be negative")))


@dataclass(frozen=True)
class RedisLock:
    url: str
    ttl: int = field(default=10, metadata=check(_positive))
    key_prefix: str = "angos-locks"
    max_retries: int = field(default=100, metadata=check(_positive))
    retry_delay_ms: int = field(default=10, metadata=check(_positive))


@dataclass(frozen=True)
class S3Lock:
    ttl_secs: int = field(default=30, metadata=check(lambda v: v if v >= 9 else _fail("must be at least 9")))
    max_retries: int = field(default=100, metadata=check(_positive))
    retry_delay_ms: int = field(default=50, metadata=check(_positive))


@dataclass(frozen=True)
class LockStrategy:
    """``kind`` is one of memory, file, redis, s3; ``redis``/``s3`` hold their options."""
    kind: str = "file"
    redis: RedisLock | None = None
    s3: S3Lock | None = None


@dataclass(frozen=True)
class FsStore:
    root_dir: str
    sync_to_disk: bool = False
    lock_strategy: LockStrategy | None = None
    # Large uploads bypass the page cache (angos.storage.direct); false writes them buffered, which
    # trades upload speed on VMs whose host reclaims free memory for a first pull served from memory.
    direct_io: bool = True


@dataclass(frozen=True)
class S3Store:
    bucket: str
    endpoint: str | None = None
    region: str = "us-east-1"
    access_key_id: str | None = None
    secret_key: str | None = None
    key_prefix: str = ""
    multipart_part_size: int = field(default=50 * 1024 * 1024, metadata={
        "parse": parse_size, "check": lambda v: v if v >= 5 * 1024 * 1024 else _fail("must be at least 5MiB")})
    multipart_copy_threshold: int = field(default=5 * 1000**3, metadata={"parse": parse_size})
    lock_strategy: LockStrategy | None = None


@dataclass(frozen=True)
class StoreConfig:
    fs: FsStore | None = None
    s3: S3Store | None = None

    @property
    def backend(self) -> str:
        return "fs" if self.fs is not None else "s3"

    @property
    def options(self):
        return self.fs if self.fs is not None else self.s3

    @property
    def lock_strategy(self) -> LockStrategy:
        ls = self.options.lock_strategy
        if ls is None:
            return LockStrategy(kind="file" if self.fs is not None else "memory")
        return ls


@dataclass(frozen=True)
class Downstream:
    name: str
    url: str
    mode: str = field(default="event+reconcile",
                      metadata=check(_one_of("event+reconcile", "event-only", "reconcile-only")))
    namespace_filter: tuple[str, ...] = field(default=(), metadata=check(_regexes))
    max_concurrent_pushes: int = field(default=4, metadata=check(_positive))
    # How many of a drain's max_concurrent_replication_jobs this downstream may hold at once
    # (None: the pool divided evenly among the configured downstreams, rounded up), so a hung or
    # slow downstream cannot stall the others.
    max_concurrent_jobs: int | None = field(default=None, metadata=check(_positive))
    prune: bool = False
    username: str | None = None
    password: str | None = None
    max_redirect: int = field(default=5, metadata=check(lambda v: v if 0 <= v <= 255 else _fail("must be 0-255")))
    server_ca_bundle: str | None = None
    client_certificate: str | None = None
    client_private_key: str | None = None
    connect_timeout_secs: int = field(default=30, metadata=check(_positive))
    read_timeout_secs: int = field(default=300, metadata=check(_positive))

    @property
    def events(self) -> bool:
        return self.mode in ("event+reconcile", "event-only")

    @property
    def reconcile(self) -> bool:
        return self.mode in ("event+reconcile", "reconcile-only")


@dataclass(frozen=True)
class Upstream:
    """``[[repository."<name>".upstream]]``: a registry this repository caches (pull-through).
    Upstreams are tried in order; the next one is asked when one cannot be reached or answers 5xx."""
    url: str
    username: str | None = None
    password: str | None = None
    max_redirect: int = field(default=5, metadata=check(lambda v: v if 0 <= v <= 255 else _fail("must be 0-255")))
    server_ca_bundle: str | None = None
    client_certificate: str | None = None
    client_private_key: str | None = None
    connect_timeout_secs: int = field(default=30, metadata=check(_positive))
    # A stall timeout: the longest wait for the upstream's next bytes, never a cap on a whole transfer.
    read_timeout_secs: int = field(default=300, metadata=check(_positive))


@dataclass(frozen=True)
class RepositoryConfig:
    immutable_tags: bool | None = None
    immutable_tags_exclusions: tuple[str, ...] = field(default=(), metadata=check(_regexes))
    access_policy: AccessPolicy | None = None
    retention_policy: RetentionPolicy | None = None
    upstream: tuple[Upstream, ...] = ()
    downstream: tuple[Downstream, ...] = ()
    # The registry host this repository stands for in distribution-spec registry proxying:
    # ``GET /v2/<x>/...?ns=<namespace>`` is served from ``<repository>/<x>`` (e.g. "docker.io").
    namespace: str | None = None
    # Event webhooks for this repository's namespaces; set (even to []), it replaces global.event_webhooks.
    event_webhooks: tuple[str, ...] | None = None
    # An [auth.webhook.<name>] for this repository's namespaces instead of the global one ("": none).
    authorization_webhook: str | None = None


def _event_kinds(values):
    from .registry.events import ACTIVITY_KINDS  # the registry names what it reports

    if not values:
        raise ValueError("must list at least one event")
    for v in values:
        if v not in ACTIVITY_KINDS:
            raise ValueError(f"unknown event {v!r}; valid: {', '.join(ACTIVITY_KINDS)}")
    return tuple(dict.fromkeys(values))




@dataclass(frozen=True)
class EventWebhook:
    """``[event_webhook.<name>]``: an HTTP receiver of registry activities (angos.events). ``required``
    and ``optional`` deliver during the client's request (``required`` before the operation, which its
    failure refuses); ``async`` deliveries are jobs on the ``webhooks`` queue."""
    url: str
    policy: str = field(metadata=check(_one_of("required", "optional", "async")))
    events: tuple[str, ...] = field(metadata=check(_event_kinds))
    # The Bearer credential and the HMAC-SHA256 key of X-Registry-Signature-256.
    token: str | None = field(default=None, metadata=check(_webhook_token))
    # One attempt's limit (connect and answer); a synchronous hook holds the client this long per attempt.
    timeout: float = field(default=5.0, metadata={
        "parse": parse_duration, "check": lambda v: v if 0 < v <= 60 else _fail("must be more than 0s and at most 60s")})
    # Further attempts after a failed one: 100 ms, 200 ms, 400 ms ... apart when synchronous; async
    # deliveries spend them only on answers (an unreachable receiver makes its jobs wait instead).
    max_retries: int = field(default=0, metadata=check(lambda v: v if 0 <= v <= 16 else _fail("must be 0-16")))
    # Regexes searched in the namespace; any match reports it. Empty: every namespace.
    repository_filter: tuple[str, ...] = field(default=(), metadata=check(_regexes))


@dataclass(frozen=True)
class UiConfig:
    enabled: bool = False
    name: str = "Angos"


@dataclass(frozen=True)
class Config:
    server: ServerConfig
    blob_store: StoreConfig
    metadata_store: StoreConfig | None = None
    global_: GlobalConfig = field(default_factory=GlobalConfig, metadata={"key": "global"})
    auth: AuthConfig = field(default_factory=AuthConfig)
    repository: dict[str, RepositoryConfig] = field(default_factory=dict)
    event_webhook: dict[str, EventWebhook] = field(default_factory=dict)
    ui: UiConfig = field(default_factory=UiConfig)
    sources: tuple[str, ...] = field(default=(), metadata={"internal": True})

    @property
    def metadata(self) -> StoreConfig:
        """The metadata store, defaulting to the blob store's backend and root."""
        if self.metadata_store is not None:
            return self.metadata_store
        return self.blob_store

    def repository_for(self, namespace: str) -> tuple[str, RepositoryConfig] | tuple[None, None]:
        """The configured repository a namespace belongs to (its key is a path prefix)."""
        for key, repo in self.repository.items():
            if namespace == key or namespace.startswith(key + "/"):
                return key, repo
        return None, None



# Loading, merging and validating live in config_load (this module holds what a configuration is);
# imported last, because config_load builds these dataclasses.
from . import config_load as _loading  # noqa: E402

load_config = _loading.load_config
load_config_text = _loading.load_config_text
build_config = _loading.build_config
merge = _loading.merge
_join = _loading._join
