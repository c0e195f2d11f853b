"""Replication's downstream client: the shared :class:`angos.remote.client.RegistryClient`
with a connection pool sized for ``max_concurrent_pushes`` blob transfers at once."""

from __future__ import annotations

from ..remote.client import MANIFEST_ACCEPT, SOURCE_INSTANCE, SOURCE_TS, ClientError, RegistryClient

__all__ = ["MANIFEST_ACCEPT", "SOURCE_INSTANCE", "SOURCE_TS", "ClientError", "DownstreamClient"]


class DownstreamClient(RegistryClient):
    def __init__(self, base_url: str, ds):
        super().__init__(base_url, ds, pool=max(8, ds.max_concurrent_pushes * 2))
