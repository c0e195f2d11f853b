"""The ``/_ext/`` listings over real HTTP: repositories with namespace counts and features,
namespaces with manifest and upload counts, revisions with tags, parent index and push/pull
times, uploads in progress; unknown or hostile names; the policy actions."""

from __future__ import annotations

import time

import requests

from tests.conftest import angos_config

from .helpers import (OCI_INDEX, assert_oci_error, digest_of, index_manifest, manifest_descriptor, push_image,
                      put_manifest)

EXTRA = """
[global]
update_pull_time = true

[repository."team"]
immutable_tags = true

[repository."mirror"]
[[repository."mirror".upstream]]
url = "http://127.0.0.1:9"
"""


def get(server, path: str, **params):
    r = requests.get(f"{server.url}/_ext/{path}", params=params, timeout=10)
    return r


def test_listings_describe_repositories_namespaces_revisions_and_uploads(angos_factory):
    server = angos_factory(extra=EXTRA, workers=1)
    started = int(time.time())
    image, body, media_type, _ = push_image(server, "team/app", tag="v1")
    other, other_body, _, _ = push_image(server, "team/app", tag="v2")
    index = index_manifest([manifest_descriptor(body, media_type), manifest_descriptor(other_body, media_type)])
    index_digest = digest_of(index)
    assert put_manifest(server, "team/app", "multi", index, OCI_INDEX).status_code == 201
    push_image(server, "team/tools", tag="latest")
    push_image(server, "loose/ns", tag="x")  # under no configured repository

    assert get(server, "_repositories").json() == {"repositories": [
        {"name": "mirror", "namespaces": 0, "is_pull_through": True, "immutable_tags": False},
        {"name": "team", "namespaces": 2, "is_pull_through": False, "immutable_tags": True},
    ]}

    upload = requests.post(server.v2("team/tools/blobs/uploads/"), timeout=10)
    location = upload.headers["Location"]
    uuid = location.rstrip("/").split("/")[-1].split("?")[0]
    r = requests.patch(server.url + location if location.startswith("/") else location, data=b"x" * 1000,
                       headers={"Content-Type": "application/octet-stream"}, timeout=10)
    assert r.status_code == 202

    assert get(server, "team/_namespaces").json() == {"namespaces": [
        {"name": "team/app", "manifests": 3, "uploads": 0},
        {"name": "team/tools", "manifests": 1, "uploads": 1},
    ]}
    uploads = get(server, "team/tools/_uploads").json()["uploads"]
    assert [(u["uuid"], u["size"]) for u in uploads] == [(uuid, 1000)]
    assert uploads[0]["started_at"] >= started - 1
    assert get(server, "team/app/_uploads").json() == {"uploads": []}

    assert requests.get(server.v2(f"team/app/manifests/{image}"), timeout=10).status_code == 200  # a pull
    revisions = {r["digest"]: r for r in get(server, "team/app/_revisions").json()["revisions"]}
    assert set(revisions) == {image, other, index_digest}
    assert revisions[index_digest]["media_type"] == OCI_INDEX
    assert revisions[index_digest]["tags"] == ["multi"] and revisions[index_digest]["parent"] is None
    assert revisions[image]["tags"] == ["v1"] and revisions[image]["parent"] == index_digest
    assert revisions[other]["parent"] == index_digest
    assert all(r["pushed_at"] >= started - 1 for r in revisions.values())
    assert revisions[image]["last_pulled_at"] >= started - 1
    assert revisions[other]["last_pulled_at"] is None


def test_unknown_and_hostile_names(angos):
    assert_oci_error(get(angos, "nothere/_namespaces"), 404, "NAME_UNKNOWN")
    assert get(angos, "nothere/_revisions").json() == {"revisions": []}
    for bad in ("..%2f..%2fetc/_revisions", "Upper/_uploads", "a//b/_revisions"):
        r = requests.get(f"{angos.url}/_ext/{bad}", timeout=10)
        assert r.status_code in (400, 404), (bad, r.status_code)
        assert r.json()["errors"][0]["code"] in ("NAME_INVALID", "NOT_FOUND", "NAME_UNKNOWN")


def test_the_policy_sees_each_listing_action_and_its_namespace(angos_factory, tmp_path):
    text = angos_config(tmp_path / "data", 0, policy="deny").replace(
        'default = "deny"\n',
        'default = "deny"\nrules = ["request.action == \'list-repositories\'",'
        ' "request.action == \'list-revisions\' && request.namespace.startsWith(\'team/\')",'
        ' "request.action == \'list-namespaces\' && request.namespace == \'team\'"]\n') + EXTRA
    server = angos_factory(config_text=text.replace("port = 0", "port = @PORT@"))
    assert get(server, "_repositories").status_code == 200
    assert get(server, "team/_namespaces").status_code == 200
    assert get(server, "team/app/_revisions").status_code == 200
    assert get(server, "other/app/_revisions").status_code == 401
    assert get(server, "team/app/_uploads").status_code == 401


def test_tag_states_list_tags_and_tombstones_paged_under_the_list_tags_action(angos_factory, tmp_path):
    text = angos_config(tmp_path / "data", 0, policy="deny").replace(
        'default = "deny"\n',
        'default = "deny"\nrules = ["request.action == \'list-tags\' && request.namespace == \'team/app\'",'
        ' "request.action in [\'start-upload\', \'update-upload\', \'complete-upload\', \'put-manifest\','
        ' \'delete-manifest\', \'get-manifest\']"]\n')
    server = angos_factory(config_text=text.replace("port = 0", "port = @PORT@"))
    digests = {t: push_image(server, "team/app", tag=t)[0] for t in ("a", "b", "c")}
    assert requests.delete(server.v2("team/app/manifests/b"), timeout=10).status_code == 202
    first = get(server, "team/app/_tags", n=2)
    assert first.status_code == 200
    page = first.json()["tags"]
    assert [(e["name"], e.get("digest")) for e in page] == [("a", digests["a"]), ("b", None)]
    assert "deleted_at" in page[1] and "created_at" in page[0]
    assert first.headers["Link"] == '</_ext/team/app/_tags?n=2&last=b>; rel="next"'
    rest = get(server, "team/app/_tags", n=2, last="b").json()["tags"]
    assert [(e["name"], e["digest"]) for e in rest] == [("c", digests["c"])]
    assert get(server, "team/app/_tags").json()["tags"] == page + rest
    assert get(server, "team/nothere/_tags").status_code == 401       # another namespace: denied
    assert get(server, "team/app/_tags", n="x").status_code == 400
