"""The seed's "restrict replication writes" policy, checked over real HTTP.

On a receiving instance only the ``replicator`` identity may push and delete
manifests and upload blobs in the replicated repository ``app``; every
authenticated identity may pull; anonymous callers get nothing. Every
identity × action combination is one request whose status is compared with
the expected allow/deny table: allowed requests must reach the handler and
succeed, denied ones answer 401 (anonymous) or 403 (authenticated) and change
nothing: the data directory is byte for byte what it was before the request
(snapshots of every file's content), and a denied push, upload completion or
delete leaves the manifest, blob or tag as it was.
"""

from __future__ import annotations

import json
import os

import pytest

from ..conftest import snapshot_diff, tree_snapshot
from .conftest import OCI_MANIFEST, Client, digest_of, identity_toml, uniq

POLICY = """
[global.access_policy]
default = "deny"
rules = ["identity.id != null"]

[repository."app".access_policy]
default = "deny"
rules = [
  "request.action == 'get-manifest' || request.action == 'get-blob'",
  "identity.id == 'replicator' && request.action in ['put-manifest', 'delete-manifest', 'start-upload', 'mount-blob', 'get-upload', 'update-upload', 'complete-upload', 'cancel-upload']",
]
"""

IDENTITIES = {"replicator": "repl-pw", "alice": "alice-pw"}
CALLERS = ["replicator", "alice", None]  # None: anonymous

# action -> callers allowed (the table under test)
ALLOWED = {
    "get-manifest": {"replicator", "alice"},
    "get-blob": {"replicator", "alice"},
    "put-manifest": {"replicator"},
    "delete-manifest": {"replicator"},
    "start-upload": {"replicator"},
    "mount-blob": {"replicator"},
    "get-upload": {"replicator"},
    "update-upload": {"replicator"},
    "complete-upload": {"replicator"},
    "cancel-upload": {"replicator"},
    "list-tags": set(),  # not granted by the repository policy, to anybody
}


@pytest.fixture(scope="module")
def server(module_server):
    return module_server(identity_toml(**IDENTITIES) + POLICY, workers=2)


def client(server, who):
    return Client(server.url, who, IDENTITIES[who]) if who else Client(server.url)


@pytest.fixture(scope="module")
def fixture_data(server):
    """A namespace with an image, and a sibling namespace holding a blob to mount."""
    repl = client(server, "replicator")
    ns = f"app/{uniq('table')}"
    digest, body = repl.push_image(ns, "v1")
    src = f"app/{uniq('src')}"
    mountable = repl.push_blob(src, b"mountable-" + os.urandom(8))
    return {"ns": ns, "digest": digest, "body": body, "config": json.loads(body)["config"]["digest"],
            "src": src, "mountable": mountable}


def _session(server, ns):
    r = client(server, "replicator").post(f"{ns}/blobs/uploads/")
    assert r.status_code == 202, r.text
    return r.headers["Location"].rsplit("/", 1)[1]


def prepare(server, data, who, act):
    """Set up what ``act`` needs (as the replicator), then return the request itself: a callable
    giving (status, expected success status). Preparation happens before the test's snapshot."""
    c = client(server, who)
    ns = data["ns"]
    if act == "get-manifest":
        return lambda: (c.get(f"{ns}/manifests/v1").status_code, 200)
    if act == "get-blob":
        return lambda: (c.get(f"{ns}/blobs/{data['config']}").status_code, 200)
    if act == "put-manifest":
        # A manifest the store does not hold yet (its blobs are there): a denied push must not store it.
        repl = client(server, "replicator")
        config = repl.push_blob(ns, b'{"fresh": "' + os.urandom(8).hex().encode() + b'"}')
        body = json.loads(data["body"])
        body["config"] = {**body["config"], "digest": config, "size": len(repl.get(f"{ns}/blobs/{config}").content)}
        raw = json.dumps(body).encode()
        tag = uniq("tag")

        def put():
            status = c.put(f"{ns}/manifests/{tag}", data=raw, headers={"Content-Type": OCI_MANIFEST}).status_code
            stored = repl.head(f"{ns}/manifests/{digest_of(raw)}").status_code
            assert (stored == 200) == (status == 201), "a denied push must not store the manifest"
            return status, 201
        return put
    if act == "delete-manifest":
        tag = uniq("del")
        r = client(server, "replicator").put(f"{ns}/manifests/{tag}", data=data["body"],
                                              headers={"Content-Type": OCI_MANIFEST})
        assert r.status_code == 201

        def delete():
            status = c.delete(f"{ns}/manifests/{tag}").status_code
            still = client(server, "replicator").get(f"{ns}/manifests/{tag}").status_code
            assert (still == 404) == (status == 202), "a denied delete must not delete"
            return status, 202
        return delete
    if act == "start-upload":
        return lambda: (c.post(f"{ns}/blobs/uploads/").status_code, 202)
    if act == "mount-blob":
        return lambda: (c.post(f"{ns}/blobs/uploads/", params={"mount": data["mountable"],
                                                               "from": data["src"]}).status_code, 201)
    session = _session(server, ns) if act.endswith("-upload") else None
    if act == "get-upload":
        return lambda: (c.get(f"{ns}/blobs/uploads/{session}").status_code, 204)
    if act == "update-upload":
        return lambda: (c.patch(f"{ns}/blobs/uploads/{session}", data=b"abc",
                                headers={"Content-Type": "application/octet-stream"}).status_code, 202)
    if act == "complete-upload":
        payload = os.urandom(16)

        def complete():
            status = c.put(f"{ns}/blobs/uploads/{session}", params={"digest": digest_of(payload)}, data=payload,
                           headers={"Content-Type": "application/octet-stream"}).status_code
            stored = client(server, "replicator").head(f"{ns}/blobs/{digest_of(payload)}").status_code
            assert (stored == 200) == (status == 201), "a denied completion must not store the blob"
            return status, 201
        return complete
    if act == "cancel-upload":
        return lambda: (c.delete(f"{ns}/blobs/uploads/{session}").status_code, 204)
    if act == "list-tags":
        return lambda: (c.get(f"{ns}/tags/list").status_code, 200)
    raise AssertionError(act)


@pytest.mark.parametrize("who", CALLERS, ids=lambda w: w or "anonymous")
@pytest.mark.parametrize("act", list(ALLOWED))
def test_restrict_replication_writes_policy_table(server, fixture_data, who, act):
    request = prepare(server, fixture_data, who, act)
    before = tree_snapshot(server.workdir / "data")
    status, ok = request()
    if who in ALLOWED[act]:
        assert status == ok, f"{who} {act}: expected {ok}, got {status}"
        return
    assert status == (401 if who is None else 403), f"{who or 'anonymous'} {act}: got {status}"
    # Denied: the store is byte for byte what it was (no blob, manifest, tag, session byte or marker).
    after = tree_snapshot(server.workdir / "data")
    assert after == before, snapshot_diff(before, after)


def test_namespace_outside_the_repository_is_governed_by_the_global_policy_alone(server):
    alice = client(server, "alice")
    digest, _ = alice.push_image(f"scratch/{uniq('free')}", "v1")
    assert digest.startswith("sha256:")
    assert Client(server.url).post(f"scratch/{uniq('anon')}/blobs/uploads/").status_code == 401


def test_mount_from_a_namespace_the_caller_cannot_read_falls_back_to_an_upload_session(module_server):
    """alice may write under scratch/ but may not read ``app``: a mount from it is a plain session (202)."""
    policy = POLICY.replace("request.action == 'get-manifest' || request.action == 'get-blob'",
                            "identity.id == 'replicator'")
    srv = module_server(identity_toml(**IDENTITIES) + policy)
    src = f"app/{uniq('src')}"
    blob = client(srv, "replicator").push_blob(src, b"secret-" + os.urandom(8))
    alice = client(srv, "alice")
    assert alice.get(f"{src}/blobs/{blob}").status_code == 403
    dst = f"scratch/{uniq('dst')}"
    for params in ({"mount": blob, "from": src}, {"mount": blob}):
        r = alice.post(f"{dst}/blobs/uploads/", params=params)
        assert r.status_code == 202, (params, r.status_code, r.text)
        assert "/blobs/uploads/" in r.headers["Location"]
    assert alice.get(f"{dst}/blobs/{blob}").status_code == 404
    # the replicator, who may read the source, gets the mount
    r = client(srv, "replicator").post(f"{dst}/blobs/uploads/", params={"mount": blob, "from": src})
    assert r.status_code == 201
