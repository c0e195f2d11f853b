"""What start-up validates beyond the configuration schema, in one function.

:func:`validate` is called by ``angos server`` before it forks its workers, by
the configuration watcher for every change that arrives while it runs, and by
``angos check-config``: one list, so a check added here (a new table that must
compile or load something) covers all three at once. Every failure is a
:class:`~angos.config.ConfigError` with a one-line message naming the key.

What it does not do: anything that needs the network or the data directory
(the S3 conditional-write probe, the instance check of :mod:`angos.instance`,
opening storage). Those stay in ``angos server``'s start-up, so that
``check-config`` can run anywhere, as any user, while the server runs.
"""

from __future__ import annotations


def validate(cfg) -> None:
    """Raise ConfigError unless every policy compiles (CEL type checks included), every identity's
    password is a well-formed argon2id hash, the authorization webhooks' TLS files and the
    server's TLS files load."""
    from .auth import AccessControl

    AccessControl(cfg).webhooks.check_files()
    if cfg.server.tls is not None:
        from .auth.tls import ReloadingTLS

        ReloadingTLS(cfg.server.tls)


def summary(cfg) -> str:
    """One line saying what this configuration serves (for ``check-config`` and start-up logs)."""
    repos = cfg.repository.values()
    downstreams = sum(len(r.downstream) for r in repos)
    upstreams = sum(len(r.upstream) for r in repos)
    jq = cfg.global_.job_queue
    queue = "in-process drain" if jq is None else f"{jq.backend} queue drained by angos worker"
    meta = "same as blobs" if cfg.metadata_store is None else _store(cfg.metadata_store)
    scheme = "https" if cfg.server.tls is not None else "http"
    return (f"listen {scheme}://{_host(cfg.server.bind_address)}:{cfg.server.port} "
            f"({_n(cfg.server.workers, 'worker')}), "
            f"blobs {_store(cfg.blob_store)}, metadata {meta} ({cfg.metadata.lock_strategy.kind} locks), "
            f"{_n(len(cfg.repository), 'repository', 'repositories')}, {_n(downstreams, 'downstream')}, "
            f"{_n(upstreams, 'upstream')}, {queue}")


def _n(count: int, one: str, many: str | None = None) -> str:
    return f"{count} {one if count == 1 else (many or one + 's')}"


def _store(store) -> str:
    if store.fs is not None:
        return f"fs:{store.fs.root_dir}"
    prefix = f"/{store.s3.key_prefix}" if store.s3.key_prefix else ""
    return f"s3://{store.s3.bucket}{prefix}"


def _host(address: str) -> str:
    return f"[{address}]" if ":" in address else address
