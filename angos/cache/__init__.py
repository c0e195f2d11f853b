"""Pull-through caching: repositories with ``[[repository."<name>".upstream]]`` tables mirror
another registry, fetching each manifest and blob from it once (SPEC section 11).

- :mod:`.service`: :class:`PullThroughCache`, the facade ``create_app`` puts in
  ``app.extensions["angos.cache"]`` and the ``cache`` jobs use;
- :mod:`.upstreams`: the ordered upstreams of a namespace, with fallback;
- :mod:`.manifests`: hit, revalidate, fetch-and-store, stale on outages;
- :mod:`.blobs` and :mod:`.fills`: one upstream fetch per blob, streamed to
  every reader while it is stored, committed only once its digest checks out;
- :mod:`angos.flight`: the in-process single flight its manifest misses share;
- :mod:`.tasks`: the ``cache.fill_blob`` job kind (background fills).

The registry never imports this package; the HTTP layer and the queue's
drain do. Docs: docs/pull-through.md.
"""

from .service import KIND_FILL_BLOB, PullThroughCache

__all__ = ["KIND_FILL_BLOB", "PullThroughCache"]
