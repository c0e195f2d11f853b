"""Re-running protocol test modules against S3-backed servers.

A ``test_s3_*.py`` module star-imports a ``tests/api`` module (its tests and
fixtures), then calls :func:`on_s3`, which drops the tests that need the
fs-only special servers (``strict_angos``, ``guarded``) and returns an
``angos`` fixture that overrides the shared filesystem server for every test
collected from that module.

In redirect mode a blob or manifest GET answers 307 and ``requests`` follows
it to the presigned S3 URL, whose response cannot carry
``Docker-Content-Digest``: the header is on the 307 (pinned by
test_s3_redirects.py). While those tests run, a ``requests`` hook copies it
from the redirect onto the final response, as a registry client reads it from
whichever response carried it; everything else (bytes, ranges, status codes,
content types) is what S3 served.
"""

from __future__ import annotations

import inspect

import pytest
import requests

SPECIAL = {"strict_angos", "guarded"}


def on_s3(namespace: dict, modes=("inline", "redirect"), fs_only=()):
    """``fs_only``: tests that reach into the filesystem data directory themselves."""
    for name in fs_only:
        del namespace[name]
    for name, obj in list(namespace.items()):
        if name.startswith("test_") and callable(obj):
            fn = getattr(obj, "__wrapped__", obj)
            try:
                params = set(inspect.signature(fn).parameters)
            except (TypeError, ValueError):
                continue
            if params & SPECIAL:
                del namespace[name]

    @pytest.fixture(scope="module", params=list(modes))
    def angos(request):
        if request.param == "inline":
            yield request.getfixturevalue("s3_angos")
            return
        server = request.getfixturevalue("s3_angos_redirect")
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(requests.Session, "send", _carry_digest(requests.Session.send))
            yield server

    return angos


def _carry_digest(send):
    def wrapped(self, request, **kwargs):
        resp = send(self, request, **kwargs)
        for earlier in resp.history:
            if earlier.status_code == 307 and "Docker-Content-Digest" in earlier.headers:
                resp.headers.setdefault("Docker-Content-Digest", earlier.headers["Docker-Content-Digest"])
        return resp
    return wrapped
