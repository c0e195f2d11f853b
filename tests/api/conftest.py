"""Fixtures for the protocol tests.

``strict_angos``: one server per session with the non-default rules the error
paths need — ``allow_missing_manifest_references = false``, immutable tags
(except ``mutable-*``), a 2 KiB manifest limit and a 64 KiB blob limit. It is
built with the same :class:`AngosServer` machinery as ``angos_factory`` but
shared, so the suite starts one extra server instead of one per test.
"""

from __future__ import annotations

import pytest

from tests.conftest import AngosServer, angos_config, free_port

STRICT_MAX_MANIFEST = 2048
STRICT_MAX_BLOB = 65536

STRICT_EXTRA = f"""
[global]
allow_missing_manifest_references = false
immutable_tags = true
immutable_tags_exclusions = ["mutable-.*"]
max_manifest_size = {STRICT_MAX_MANIFEST}
max_blob_size = "64KiB"
"""


@pytest.fixture(scope="session")
def strict_angos(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("angos-strict")
    port = free_port()
    server = AngosServer(workdir, angos_config(workdir / "data", port, 2, STRICT_EXTRA), port).start()
    yield server
    server.stop(timeout=10)
