"""Fixtures for the protocol tests.

``strict_angos``: one server per session with the non-default rules the error
paths need — ``allow_missing_manifest_references = false``, immutable tags
(except ``mutable-*``), a 2 KiB manifest limit and a 64 KiB blob limit. It is
built with the same :class:`AngosServer` machinery as ``angos_factory`` but
shared, so the suite starts one extra server instead of one per test.

``guarded``: a deny-by-default server with two basic-auth identities: ``alice``
(password ``s3cret``) may do anything but delete manifests; ``bob`` (``hunter2``)
may do anything but read blobs in namespaces starting with ``secret``.
"""

from __future__ import annotations

import argon2
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


ALICE = ("alice", "s3cret")
BOB = ("bob", "hunter2")


@pytest.fixture(scope="session")
def guarded(tmp_path_factory):
    # Cheap argon2 parameters: verification cost is encoded in the hash.
    hasher = argon2.PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    extra = f"""
[global.access_policy]
default = "deny"
rules = [
  "identity.username == 'alice' && request.action != 'delete-manifest'",
  "identity.username == 'bob' && !(request.action == 'get-blob' && request.namespace.startsWith('secret'))",
]

[auth.identity.alice]
username = "alice"
password = "{hasher.hash(ALICE[1])}"

[auth.identity.bob]
username = "bob"
password = "{hasher.hash(BOB[1])}"
"""
    workdir = tmp_path_factory.mktemp("angos-guarded")
    port = free_port()
    text = angos_config(workdir / "data", port, 2, policy="deny").replace(
        '[global.access_policy]\ndefault = "deny"\n', "") + extra
    server = AngosServer(workdir, text, port).start()
    yield server
    server.stop(timeout=10)
