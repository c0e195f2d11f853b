"""Storage backends behind one ObjectStore contract, plus lock strategies.

``build_store(store_cfg)`` and ``build_locks(cfg)`` pick implementations from
explicit name→class maps; an unknown name fails with the list of valid ones.
"""

from __future__ import annotations

import os

from .base import NotFound, ObjectInfo, ObjectStore, StorageUnavailable
from .fs import FsStore
from .locks import FileLocks, LockManager, MemoryLocks

BACKENDS = {"fs": FsStore}


def build_store(store_cfg) -> ObjectStore:
    backend = store_cfg.backend
    if backend == "fs":
        return FsStore(store_cfg.fs.root_dir, store_cfg.fs.sync_to_disk, store_cfg.fs.direct_io)
    if backend == "s3":
        from .s3 import S3Store  # imported lazily: boto3 is slow to import

        return S3Store.from_config(store_cfg.s3)
    raise ValueError(f"unknown storage backend {backend!r}; valid: fs, s3")


def build_locks(cfg) -> LockManager:
    strategy = cfg.metadata.lock_strategy
    if strategy.kind == "memory":
        return MemoryLocks()
    if strategy.kind == "file":
        return FileLocks(os.path.join(cfg.metadata.fs.root_dir, "_locks"))
    if strategy.kind == "redis":
        from .redis_locks import RedisLocks

        return RedisLocks(strategy.redis)
    if strategy.kind == "s3":
        from .s3_locks import S3Locks

        return S3Locks(cfg.metadata.s3, strategy.s3)
    raise ValueError(f"unknown lock strategy {strategy.kind!r}; valid: memory, file, redis, s3")


__all__ = ["NotFound", "ObjectInfo", "ObjectStore", "StorageUnavailable", "build_store", "build_locks",
           "LockManager"]
