"""Loading a configuration: read TOML files, merge them, build and validate :class:`~.config.Config`.

The contract is :mod:`angos.config`'s (which re-exports these functions): every
problem is a :class:`~.config.ConfigError` naming the file or the dotted key
path, unknown keys get a "did you mean" hint, and the result is immutable.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import tomllib
import types
import typing
from typing import Any

from .config import Config, ConfigError, JobQueueConfig, LockStrategy, RedisLock, S3Lock

def merge(base: dict, override: dict) -> dict:
    """Tables merge recursively; anything else in ``override`` replaces ``base``."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def load_config(paths: list[str] | tuple[str, ...]) -> Config:
    data: dict = {}
    for path in paths:
        try:
            with open(path, "rb") as fh:
                doc = tomllib.load(fh)
        except FileNotFoundError:
            raise ConfigError(f"{path}: configuration file not found") from None
        except PermissionError:
            raise ConfigError(f"{path}: permission denied") from None
        except IsADirectoryError:
            raise ConfigError(f"{path}: is a directory, not a configuration file") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: invalid TOML: {exc}") from None
        data = merge(data, doc)
    cfg = build_config(data)
    return dataclasses.replace(cfg, sources=tuple(paths))


def load_config_text(text: str) -> Config:
    try:
        return build_config(tomllib.loads(text))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"invalid TOML: {exc}") from None


def build_config(data: dict) -> Config:
    cfg = _build(Config, _default_metadata_root(data), "")
    server = data.get("server")
    if (cfg.metadata.lock_strategy.kind == "memory" and cfg.server.workers > 1
            and not (isinstance(server, dict) and "workers" in server)):
        # A process-local lock coordinates one process: with it (an S3 metadata store's default, or
        # chosen), the server runs one worker unless told otherwise, and works with any lock strategy.
        cfg = dataclasses.replace(cfg, server=dataclasses.replace(cfg.server, workers=1))
    _validate(cfg)
    return cfg


def _default_metadata_root(data: dict) -> dict:
    """A ``[metadata_store.fs]`` table without ``root_dir`` (say, only a ``lock_strategy``) means the
    blob store's root, as the documentation says; with blobs on S3 there is no root to take."""
    meta = data.get("metadata_store")
    fs = meta.get("fs") if isinstance(meta, dict) else None
    if not isinstance(fs, dict) or "root_dir" in fs:
        return data
    blob = data.get("blob_store")
    blob_fs = blob.get("fs") if isinstance(blob, dict) else None
    if isinstance(blob, dict) and blob_fs is None and "s3" in blob:
        raise ConfigError("metadata_store.fs.root_dir: required key is missing (it defaults to the blob store's "
                          "root only when the blob store is [blob_store.fs])")
    if not isinstance(blob_fs, dict) or "root_dir" not in blob_fs:
        return data  # the blob store's own problem is reported first
    return {**data, "metadata_store": {**meta, "fs": {**fs, "root_dir": blob_fs["root_dir"]}}}


def _key(f: dataclasses.Field) -> str:
    return f.metadata.get("key", f.name)


def _join(path: str, key) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    key = str(key)
    if not re.fullmatch(r"[A-Za-z0-9_-]+", key):
        key = '"' + key + '"'
    return f"{path}.{key}" if path else key


def _build(cls, data, path: str):
    if not isinstance(data, dict):
        raise ConfigError(f"{path or 'config'}: expected a table, got {_show(data)}")
    if cls is LockStrategy:
        return data  # handled by _convert
    hints = typing.get_type_hints(cls)
    fields = [f for f in dataclasses.fields(cls) if not f.metadata.get("internal")]
    known = {_key(f): f for f in fields}
    for key in data:
        if key not in known:
            hint = difflib.get_close_matches(key, list(known), n=1)
            suggestion = f" (did you mean {hint[0]!r}?)" if hint else ""
            raise ConfigError(f"{_join(path, key)}: unknown key{suggestion}")
    kwargs = {}
    for key, f in known.items():
        sub = _join(path, key)
        if key not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigError(f"{sub}: required key is missing")
            continue
        value = data[key]
        parse = f.metadata.get("parse")
        try:
            if parse is not None:
                value = parse(value)
            else:
                value = _convert(hints[f.name], value, sub)
            chk = f.metadata.get("check")
            if chk is not None and value is not None:
                value = chk(value)
        except ValueError as exc:
            raise ConfigError(f"{sub}: {exc}") from None
        kwargs[f.name] = value
    return cls(**kwargs)


def _show(value) -> str:
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return repr(value)


def _convert(tp, value, path: str):
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        return _convert(inner[0], value, path)
    if tp is LockStrategy:
        return _lock_strategy(value, path)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, path)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: expected true or false, got {_show(value)}")
        return value
    if tp is int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise ConfigError(f"{path}: expected an integer, got {_show(value)}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path}: expected a string, got {_show(value)}")
        return value
    if tp is tuple or origin is tuple:
        if not isinstance(value, list):
            raise ConfigError(f"{path}: expected an array, got {_show(value)}")
        item_tp = args[0] if args else Any
        return tuple(_convert(item_tp, v, _join(path, i)) for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a table, got {_show(value)}")
        return {k: _convert(args[1], v, _join(path, k)) for k, v in value.items()}
    return value


_LOCK_KINDS = {"memory": None, "file": None, "redis": RedisLock, "s3": S3Lock}


def _lock_strategy(value, path: str) -> LockStrategy:
    if isinstance(value, str):
        if value not in _LOCK_KINDS:
            raise ConfigError(f"{path}: unknown lock strategy {value!r}; valid: {', '.join(_LOCK_KINDS)}")
        if _LOCK_KINDS[value] is RedisLock:
            raise ConfigError(f"{path}: the redis lock strategy needs a [{path}.redis] table with a url")
        return LockStrategy(kind=value, s3=S3Lock() if value == "s3" else None)
    if isinstance(value, dict):
        if len(value) != 1:
            raise ConfigError(f"{path}: expected exactly one of {', '.join(_LOCK_KINDS)}")
        (kind, opts), = value.items()
        if kind not in _LOCK_KINDS:
            hint = difflib.get_close_matches(kind, list(_LOCK_KINDS), n=1)
            suggestion = f" (did you mean {hint[0]!r}?)" if hint else ""
            raise ConfigError(f"{_join(path, kind)}: unknown lock strategy{suggestion}; valid: {', '.join(_LOCK_KINDS)}")
        cls = _LOCK_KINDS[kind]
        if cls is None:
            return LockStrategy(kind=kind)
        return LockStrategy(kind=kind, **{kind: _build(cls, opts, _join(path, kind))})
    raise ConfigError(f"{path}: expected a strategy name or table, got {_show(value)}")


def _validate(cfg: Config) -> None:
    for name, store in (("blob_store", cfg.blob_store), ("metadata_store", cfg.metadata_store)):
        if store is None:
            continue
        if (store.fs is None) == (store.s3 is None):
            raise ConfigError(f"{name}: configure exactly one of [{name}.fs] or [{name}.s3]")
    if cfg.blob_store.fs is not None and cfg.blob_store.fs.lock_strategy is not None:
        raise ConfigError("blob_store.fs.lock_strategy: lock strategies belong to [metadata_store]")
    lock = cfg.metadata.lock_strategy
    if lock.kind == "s3" and cfg.metadata.s3 is None:
        raise ConfigError("metadata_store.fs.lock_strategy: the s3 lock strategy needs an S3 metadata store")
    if lock.kind == "file" and cfg.metadata.fs is None:
        raise ConfigError("metadata_store.s3.lock_strategy: the file lock strategy needs a filesystem metadata store")
    where = f"metadata_store.{cfg.metadata.backend}.lock_strategy"
    if lock.kind == "memory" and cfg.server.workers > 1:
        raise ConfigError(
            f"{where}: the process-local 'memory' lock cannot coordinate {cfg.server.workers} server workers; "
            f"use \"file\" (one host) or [{where}.redis] (several hosts), or set server.workers = 1")
    if lock.kind == "memory" and cfg.global_.job_queue is not None:
        raise ConfigError(
            f"{where}: [global.job_queue] runs separate worker processes, which the process-local 'memory' lock "
            f"cannot coordinate; use \"file\" (one host), [{where}.redis] or, on S3, [{where}.s3]")
    jq = cfg.global_.job_queue
    if jq is not None:
        if jq.backend == "redis" and not jq.url:
            raise ConfigError("global.job_queue.url: required when backend = \"redis\"")
        if jq.backend == "sqlite" and cfg.metadata.fs is None:
            raise ConfigError("global.job_queue.backend: the sqlite queue needs a filesystem metadata store; "
                              "use backend = \"redis\" with an S3 metadata store")
        if jq.retry_backoff_min_ms > jq.retry_backoff_max_ms:
            raise ConfigError("global.job_queue.retry_backoff_min_ms: must not exceed retry_backoff_max_ms")
    rs, base = cfg.global_.replication, jq or JobQueueConfig()
    if (rs.retry_backoff_min_ms or base.retry_backoff_min_ms) > (rs.retry_backoff_max_ms or base.retry_backoff_max_ms):
        raise ConfigError("global.replication.retry_backoff_min_ms: must not exceed retry_backoff_max_ms")
    if rs.outage_probe_min_ms > rs.outage_probe_max_ms:
        raise ConfigError("global.replication.outage_probe_min_ms: must not exceed outage_probe_max_ms")
    if rs.change_feed_grace >= rs.tombstone_horizon:
        raise ConfigError("global.replication.change_feed_grace: must be shorter than tombstone_horizon")
    if cfg.server.tls is not None and cfg.server.tls.client_auth == "required" and not cfg.server.tls.client_ca_bundle:
        raise ConfigError("server.tls.client_ca_bundle: required when client_auth = \"required\"")
    _validate_repositories(cfg)
    _validate_oidc(cfg)
    _validate_event_webhooks(cfg)
    _validate_authorization_webhooks(cfg)


def _validate_oidc(cfg: Config) -> None:
    usernames = {ident.username: ident_id for ident_id, ident in cfg.auth.identity.items()}
    for name, prov in cfg.auth.oidc.items():
        where = _join("auth.oidc", name)
        # The name is the Basic username that carries a token: one that basic auth could also mean is ambiguous.
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}", name):
            raise ConfigError(f"{where}: a provider name is a login username: 1-63 letters, digits, '.', '_' or '-'")
        if name in usernames:
            raise ConfigError(f"{where}: {name!r} is also the username of auth.identity.{usernames[name]}; "
                              f"basic credentials with that username would be ambiguous")
        if prov.provider == "generic" and prov.issuer is None:
            raise ConfigError(f"{where}.issuer: required (an https:// URL) unless provider = \"github\"")
        if (prov.client_certificate_bundle is None) != (prov.client_private_key is None):
            raise ConfigError(f"{where}: client_certificate_bundle and client_private_key go together")


def _validate_event_webhooks(cfg: Config) -> None:
    """Names are metric labels and job keys; every reference must name a defined webhook."""
    for name, hook in cfg.event_webhook.items():
        where = _join("event_webhook", name)
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", name):
            raise ConfigError(f"{where}: a webhook name is 1-64 letters, digits, '.', '_' or '-'")
        if not re.fullmatch(r"https?://[^/\s]+(/[^\s]*)?", hook.url):
            # Not echoed: a webhook URL often carries a secret in its path (Slack, Teams...).
            raise ConfigError(f"{where}.url: expected an http:// or https:// URL")
    lists = [("global.event_webhooks", cfg.global_.event_webhooks)]
    lists += [(f"{_join('repository', key)}.event_webhooks", repo.event_webhooks)
              for key, repo in cfg.repository.items() if repo.event_webhooks]
    for where, names in lists:
        for i, name in enumerate(names):
            if name not in cfg.event_webhook:
                defined = ", ".join(sorted(cfg.event_webhook)) or "none"
                raise ConfigError(f"{where}[{i}]: no [event_webhook.{name}] table (defined: {defined})")


def _validate_authorization_webhooks(cfg: Config) -> None:
    """``[auth.webhook.<name>]`` tables, and every ``authorization_webhook`` naming one of them."""
    from .config import INSTANCE_NAME

    for name, hook in cfg.auth.webhook.items():
        where = _join("auth.webhook", name)
        if not INSTANCE_NAME.fullmatch(name):  # a metric label and a log word
            raise ConfigError(f"{where}: a webhook name is 1-63 letters, digits, '.', '_' or '-' starting with a "
                              f"letter or digit")
        if (hook.client_certificate_bundle is None) != (hook.client_private_key is None):
            raise ConfigError(f"{where}: client_certificate_bundle and client_private_key go together")
        if hook.bearer_token is not None and hook.basic_auth is not None:
            raise ConfigError(f"{where}: bearer_token and basic_auth are two ways to authenticate; choose one")
        if ((hook.bearer_token is not None or hook.basic_auth is not None)
                and any(h.lower() == "authorization" for h in hook.forward_headers)):
            raise ConfigError(f"{where}.forward_headers: cannot forward the client's Authorization header when "
                              f"bearer_token or basic_auth sets the webhook's own")
    refs = [("global.authorization_webhook", cfg.global_.authorization_webhook)]
    refs += [(_join("repository", key) + ".authorization_webhook", repo.authorization_webhook)
             for key, repo in cfg.repository.items()]
    for where, name in refs:
        if name and name not in cfg.auth.webhook:
            known = ", ".join(repr(n) for n in sorted(cfg.auth.webhook)) or "none"
            raise ConfigError(f"{where}: no [auth.webhook.{name}] is configured (configured: {known})")


def _validate_repositories(cfg: Config) -> None:
    from .oci.reference import _NAME

    keys = sorted(cfg.repository)
    for key in keys:
        if not _NAME.fullmatch(key):
            raise ConfigError(f"{_join('repository', key)}: not a valid repository name")
    for a in keys:
        for b in keys:
            if a != b and b.startswith(a + "/"):
                raise ConfigError(f"{_join('repository', b)}: overlaps repository {a!r}; repository keys must not nest")
    for key, repo in cfg.repository.items():
        base = _join("repository", key)
        names = set()
        for i, ds in enumerate(repo.downstream):
            where = f"{base}.downstream[{i}]"
            if ds.name in names:
                raise ConfigError(f"{where}.name: duplicate downstream name {ds.name!r}")
            names.add(ds.name)
            if not re.fullmatch(r"https?://[^/\s]+(/[^\s]*)?", ds.url):
                raise ConfigError(f"{where}.url: expected an http:// or https:// URL, got {ds.url!r}")
            if (ds.client_certificate is None) != (ds.client_private_key is None):
                raise ConfigError(f"{where}: client_certificate and client_private_key go together")
            if (ds.username is None) != (ds.password is None):
                raise ConfigError(f"{where}: username and password go together")
        for i, up in enumerate(repo.upstream):
            where = f"{base}.upstream[{i}]"
            if not re.fullmatch(r"https?://[^/\s]+(/[^\s]*)?", up.url):
                raise ConfigError(f"{where}.url: expected an http:// or https:// URL, got {up.url!r}")
            if (up.client_certificate is None) != (up.client_private_key is None):
                raise ConfigError(f"{where}: client_certificate and client_private_key go together")
            if (up.username is None) != (up.password is None):
                raise ConfigError(f"{where}: username and password go together")
        if repo.upstream and repo.downstream:
            # A cache holds the upstream's content, stamped with fill times rather than author
            # times; replicating it would make peers' last-writer-wins compare fill times, and
            # each peer can cache the upstream itself (docs/pull-through.md).
            raise ConfigError(f"{base}: a repository is either a pull-through cache (upstream) or a replication "
                              f"source (downstream), not both; give each site its own upstream instead")
    namespaces: dict[str, str] = {}
    for key, repo in cfg.repository.items():
        if repo.namespace is None:
            continue
        where = f"{_join('repository', key)}.namespace"
        if not re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?(:[0-9]{1,5})?", repo.namespace):
            raise ConfigError(f"{where}: expected a registry host such as \"docker.io\" or \"ghcr.io\", "
                              f"got {repo.namespace!r}")
        other = namespaces.get(repo.namespace.lower())
        if other is not None:
            raise ConfigError(f"{where}: {repo.namespace!r} is already the namespace of repository {other!r}")
        namespaces[repo.namespace.lower()] = key
