"""OCI semantics with no HTTP framework: blobs, uploads, manifests, tags,
referrers, catalog and ownership grants, behind the :class:`Registry` facade."""

from .registry import Registry, build_registry

__all__ = ["Registry", "build_registry"]
