"""Native threads under gevent: where blocking work goes so the event loop keeps serving.

hashlib, file writes and sqlite3 release the GIL but would block a gevent
worker's hub if called on a greenlet. :func:`native_spawn` hands such work to
the hub's thread pool (a greenlet waiting on the result yields to its peers).
Outside a gevent-patched process (tests, tools, the CLI) there is no hub to
protect: :func:`under_gevent` is False and callers run the work inline.
"""

from __future__ import annotations

import sys
from typing import Callable


def under_gevent() -> bool:
    """Whether gevent has patched ``threading`` in this process (a gunicorn gevent worker)."""
    monkey = sys.modules.get("gevent.monkey")
    return bool(monkey and monkey.is_module_patched("threading"))


def native_spawn() -> Callable | None:
    """The hub thread pool's ``spawn`` under gevent (returns an AsyncResult-like), else None."""
    if not under_gevent():
        return None
    import gevent

    return gevent.get_hub().threadpool.spawn
