"""The browsing pages over real HTTP: the home page groups every namespace under its repository
or "unconfigured", with a filter and paging; a namespace page shows tags (paged, filtered) with
platforms, sizes, times and referrer badges, an index's children, then untagged manifests; the
manifest page shows manifest, config, layers, parents, referrers, files, replication and cache;
tags and manifests are deleted after a confirmation, never when immutable or refused by the
policy; whatever a client pushed is escaped; a user who may read one namespace sees only it."""

from __future__ import annotations

import json
import random
import re
import uuid

import argon2
import markupsafe
import pytest
import requests

from angos.api.ui.common import size
from angos.registry.image_views import ROW_REFERRERS
from tests.conftest import AngosServer, angos_config, free_port, wait_for

from .helpers import (OCI_CONFIG, OCI_INDEX, OCI_LAYER, OCI_MANIFEST, descriptor, digest_of, image_manifest,
                      index_manifest, push_blob, put_manifest, random_bytes)
from .ui_html import parse

UI = """
[global]
update_pull_time = true
[ui]
enabled = true
[repository."team"]
[repository."locked"]
immutable_tags = true
immutable_tags_exclusions = ["^dev-"]
"""
SAME = {"Sec-Fetch-Site": "same-origin"}   # what a browser sends with the page's own form
SIG = "application/vnd.dev.cosign.artifact.sig.v1+json"
EMPTY = "application/vnd.oci.empty.v1+json"
HOSTILE = "<script>alert('x')</script>"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("angos-ui-browse")
    port = free_port()
    srv = AngosServer(workdir, angos_config(workdir / "data", port, 2, UI), port).start()
    yield srv
    srv.stop(timeout=10)


def get(server, path: str, auth=None, status: int = 200, **params):
    r = requests.get(server.url + path, params=params or None, auth=auth, timeout=30, allow_redirects=False)
    assert r.status_code == status, f"GET {path}: {r.status_code} {r.text[:800]}"
    return r, parse(r.text)


def push_image(server, ns: str, tag: str | None = None, os_: str = "linux", arch: str = "amd64",
               variant: str | None = None, config: dict | None = None, layers: int = 1, auth=None,
               **manifest_kw) -> tuple[str, bytes]:
    """An image whose config names its platform (plus ``config``'s fields); returns (digest, body)."""
    doc = {"architecture": arch, "os": os_, "nonce": uuid.uuid4().hex, **(config or {})}
    if variant:
        doc["variant"] = variant
    cfg = json.dumps(doc).encode()
    blobs = [random_bytes(100 + i) for i in range(layers)]
    for b in (cfg, *blobs):
        r = requests.post(server.v2(f"{ns}/blobs/uploads/?digest={digest_of(b)}"), data=b, auth=auth, timeout=30)
        assert r.status_code == 201, r.text
    body = image_manifest(descriptor(OCI_CONFIG, cfg), [descriptor(OCI_LAYER, b) for b in blobs], **manifest_kw)
    r = requests.put(server.v2(f"{ns}/manifests/{tag or digest_of(body)}"), data=body, auth=auth, timeout=30,
                     headers={"Content-Type": OCI_MANIFEST})
    assert r.status_code == 201, r.text
    return r.headers["Docker-Content-Digest"], body


def tag_as(server, ns: str, body: bytes, *tags: str, media_type: str = OCI_MANIFEST) -> None:
    for t in tags:
        assert put_manifest(server, ns, t, body, media_type).status_code == 201


def total_size(body: bytes) -> int:
    doc = json.loads(body)
    return len(body) + doc["config"]["size"] + sum(layer["size"] for layer in doc["layers"])


def follow_pages(server, path: str, cell, **params) -> list[str]:
    """Every row ``cell(dom)`` gives, following ``a[rel=next]`` links to the end."""
    seen, url = [], path
    for _ in range(50):
        _, dom = get(server, url, **params)
        seen += cell(dom)
        nxt = dom.select("a", rel="next")
        if not nxt:
            return seen
        url, params = nxt[0].attrs["href"], {}
    raise AssertionError("paging does not end")


# -- home

def test_home_groups_every_namespace_under_its_repository_or_unconfigured(server):
    uid = uuid.uuid4().hex[:8]
    push_image(server, f"team/app-{uid}", "v1")
    push_image(server, f"locked/base-{uid}", "v1")
    push_image(server, f"loose-{uid}/thing", "v1")
    r, dom = get(server, "/_ui/")
    assert r.headers["Content-Type"].startswith("text/html")
    groups = {s.attrs["data-repository"]: s for s in dom.select("section", cls="group")}
    assert {"team", "locked", ""} <= set(groups)
    assert groups[""].one("h2").text() == "unconfigured"
    assert groups["team"].one("h2").text() == "team"
    assert groups["team"].select("tr", data_namespace=f"team/app-{uid}")
    assert groups["locked"].select("tr", data_namespace=f"locked/base-{uid}")
    row = groups[""].one("tr", data_namespace=f"loose-{uid}/thing")
    assert row.one("a").attrs["href"] == f"/_ui/namespaces/loose-{uid}/thing"
    assert [td.text() for td in row.select("td")][1:] == ["1", "1"]  # tags, manifests
    # The configured repositories come first, "unconfigured" last.
    order = [s.attrs["data-repository"] for s in dom.select("section", cls="group")]
    assert order[-1] == "" and order.index("locked") < order.index("team")
    # The crumbs start at Repositories; a repository's own page holds just its group.
    _, dom = get(server, "/_ui/repositories/team")
    assert [s.attrs["data-repository"] for s in dom.select("section", cls="group")] == ["team"]
    assert dom.one("nav", cls="crumbs").text() == "Repositories team"
    get(server, "/_ui/repositories/nope", status=404)


def test_home_filter_and_paging_visit_every_namespace_once(server):
    seed = random.randrange(1 << 30)
    print("seed", seed)
    rng = random.Random(seed)
    uid = uuid.uuid4().hex[:8]
    names = sorted({f"team/pg-{uid}-{rng.randrange(10**6):06d}" for _ in range(7)}
                   | {f"pg-{uid}-{rng.randrange(10**6):06d}/x" for _ in range(3)})
    for ns in names:
        push_image(server, ns, "v1")
    _, dom = get(server, "/_ui/", q=uid)
    assert dom.one("form", role="search").one("input", type="search").attrs["name"] == "q"
    assert sorted(tr.attrs["data-namespace"] for tr in dom.select("tr", data_namespace=True)) == names
    n = rng.randrange(1, 4)
    rows = lambda d: [tr.attrs["data-namespace"] for tr in d.select("tr", data_namespace=True)]  # noqa: E731
    shown = follow_pages(server, "/_ui/", rows, q=uid.upper(), n=n)   # the filter ignores case
    team = [x for x in names if x.startswith("team/")]
    assert shown == team + [x for x in names if x not in team], f"n={n}"
    _, dom = get(server, "/_ui/", q=f"{uid}-nothing")
    assert not dom.select("tr", data_namespace=True) and "No namespace matches" in dom.text()


# -- the namespace page

def test_namespace_page_pages_and_filters_tags_and_offers_the_pull_command(server):
    ns = f"team/tags-{uuid.uuid4().hex[:8]}"
    digest, body = push_image(server, ns, "v0")
    tags = ["v0"] + [f"v{i}" for i in range(1, 8)] + ["latest", "rc-1"]
    tag_as(server, ns, body, *tags[1:])
    cell = lambda d: [tr.attrs["data-tag"] for tr in d.select("tr", data_tag=True)]  # noqa: E731
    assert follow_pages(server, f"/_ui/namespaces/{ns}", cell, n=3) == sorted(tags)
    r, dom = get(server, f"/_ui/namespaces/{ns}", q="RC")
    assert cell(dom) == ["rc-1"]
    _, dom = get(server, f"/_ui/namespaces/{ns}")
    pulls = [c.text() for c in dom.select("code", cls="pull")]
    assert pulls == [f"docker pull {server.host}/{ns}:latest", f"podman pull {server.host}/{ns}:latest"]
    for pull in pulls:
        assert dom.select("button", cls="copy", data_copy=pull)
    row = dom.one("table", id="tags").one("tr", data_tag="v3")
    assert row.select("button", cls="copy", data_copy=digest)
    assert row.one("span", title=digest).text() == digest[:19]
    assert [b.text() for b in row.select("span", cls="badge platform")] == ["linux/amd64"]
    cells = [td.text() for td in row.select("td")]
    assert cells[3] == size(total_size(body))
    assert cells[4] == "just now" and cells[5] == "never"   # pushed, never pulled
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", row.select("time")[0].attrs["datetime"])
    # A pull is recorded (update_pull_time is on by default) and shown.
    requests.get(server.v2(f"{ns}/manifests/v3"), headers={"Accept": OCI_MANIFEST}, timeout=10)
    _, dom = get(server, f"/_ui/namespaces/{ns}")
    assert [td.text() for td in dom.one("tr", data_tag="v3").select("td")][5] == "just now"
    # The one manifest is tagged: no untagged ones; the page says so.
    assert not dom.select("table", id="untagged") and "No untagged manifests." in dom.text()
    # With more tags than a page holds, the untagged manifests get a paged listing of their own.
    loose = sorted(push_image(server, ns)[0] for _ in range(3))
    _, dom = get(server, f"/_ui/namespaces/{ns}", n=4)
    assert not dom.select("table", id="untagged")
    (link,) = [a for a in dom.select("a") if a.text() == "Untagged manifests"]
    digests = lambda d: [tr.attrs["data-digest"] for tr in d.select("tr", data_digest=True)]  # noqa: E731
    assert follow_pages(server, link.attrs["href"], digests, n=2) == loose
    r, dom = get(server, "/_ui/namespaces/team/nothing-here", status=404)  # as /v2/ answers NAME_UNKNOWN
    assert "No manifests in team/nothing-here." in dom.text()
    get(server, "/_ui/namespaces/Bad..Name", status=400)


def test_a_multi_arch_index_is_one_row_with_its_platforms_and_children(server):
    ns = f"team/multi-{uuid.uuid4().hex[:8]}"
    amd, amd_body = push_image(server, ns, arch="amd64")
    arm, arm_body = push_image(server, ns, arch="arm64", variant="v8")
    index = index_manifest([descriptor(OCI_MANIFEST, amd_body, platform={"os": "linux", "architecture": "amd64"}),
                            descriptor(OCI_MANIFEST, arm_body, platform={"os": "linux", "architecture": "arm64",
                                                                         "variant": "v8"})])
    r = put_manifest(server, ns, "multi", index, OCI_INDEX)
    assert r.status_code == 201
    idx = r.headers["Docker-Content-Digest"]
    _, dom = get(server, f"/_ui/namespaces/{ns}")
    row = dom.one("tr", data_tag="multi")
    details = row.one("details", cls="children")
    assert [b.text() for b in details.one("summary").select("span", cls="badge platform")] == \
        ["linux/amd64", "linux/arm64/v8"]
    links = {a.attrs["href"] for a in details.select("a")}
    assert links == {f"/_ui/namespaces/{ns}/manifests/{amd}", f"/_ui/namespaces/{ns}/manifests/{arm}"}
    assert [td.text() for td in row.select("td")][3] == size(len(index) + total_size(amd_body) + total_size(arm_body))
    # The children are not untagged rows of their own.
    assert not dom.select("tr", data_digest=amd) and not dom.select("tr", data_digest=arm)
    # The index's page lists them; a child's page names the index that lists it, with its platform.
    _, dom = get(server, f"/_ui/namespaces/{ns}/manifests/{idx}")
    children = dom.one("section", id="manifest").one("table", id="children")
    assert [b.text() for b in children.select("span", cls="badge platform")] == ["linux/amd64", "linux/arm64/v8"]
    assert not dom.select("section", id="layers")
    _, dom = get(server, f"/_ui/namespaces/{ns}/manifests/{arm}")
    parents = dom.one("section", id="referenced-by")
    assert parents.select("span", title=idx) and parents.one("span", cls="badge platform").text() == "linux/arm64/v8"
    # A tag in place of the digest goes to the digest's page.
    r, _ = get(server, f"/_ui/namespaces/{ns}/manifests/multi", status=303)
    assert r.headers["Location"].endswith(f"/_ui/namespaces/{ns}/manifests/{idx}")


def test_referrers_are_badges_on_their_subject_not_rows(server):
    ns = f"team/signed-{uuid.uuid4().hex[:8]}"
    digest, body = push_image(server, ns, "v1")
    subject = descriptor(OCI_MANIFEST, body)
    sig, _ = push_image(server, ns, subject=subject, artifact_type=SIG)
    hostile_type = "application/vnd.x&y+json"   # '&' is allowed in a media type
    odd, _ = push_image(server, ns, subject=subject, artifact_type=hostile_type)
    r, dom = get(server, f"/_ui/namespaces/{ns}")
    row = dom.one("tr", data_tag="v1")
    badges = {b.attrs["data-artifact-type"]: b for b in row.select("span", cls="badge referrer")}
    assert set(badges) == {SIG, hostile_type}
    assert badges[SIG].text() == SIG
    assert badges[SIG].one("a").attrs["href"] == f"/_ui/namespaces/{ns}/manifests/{sig}"
    assert "application/vnd.x&amp;y+json" in r.text and "x&y" not in r.text
    assert not dom.select("tr", data_digest=sig) and not dom.select("tr", data_digest=odd)
    _, dom = get(server, f"/_ui/namespaces/{ns}/manifests/{digest}")
    listed = dom.one("section", id="referrers").select("tr", data_digest=True)
    assert {tr.attrs["data-digest"] for tr in listed} == {sig, odd}
    assert dom.one("section", id="referrers").one("tr", data_digest=sig).one("span", cls="badge referrer").text() == SIG
    # A row shows the first few referrers and links to the rest.
    more = [push_image(server, ns, subject=subject, artifact_type="application/vnd.example.att.v1")[0]
            for _ in range(ROW_REFERRERS - 1)]
    _, dom = get(server, f"/_ui/namespaces/{ns}")
    row = dom.one("tr", data_tag="v1")
    assert len(row.select("span", cls="badge referrer")) == ROW_REFERRERS
    assert row.one("a", href=f"/_ui/namespaces/{ns}/manifests/{digest}#referrers").text() == "+1 more"
    _, dom = get(server, f"/_ui/namespaces/{ns}/manifests/{digest}")
    assert len(dom.one("section", id="referrers").select("tr", data_digest=True)) == len(more) + 2
    # The signature's own page links back to its subject.
    _, dom = get(server, f"/_ui/namespaces/{ns}/manifests/{sig}")
    assert dom.one("section", id="manifest").select("a", href=f"/_ui/namespaces/{ns}/manifests/{digest}")


def test_an_oras_artifact_lists_its_files_by_title(server):
    ns = f"team/oras-{uuid.uuid4().hex[:8]}"
    files = {"report.txt": random_bytes(300), f"{HOSTILE}.md": random_bytes(40)}
    push_blob(server, ns, b"{}")
    layers = []
    for title, data in files.items():
        push_blob(server, ns, data)
        layers.append(descriptor("text/plain", data, annotations={"org.opencontainers.image.title": title}))
    body = image_manifest(descriptor(EMPTY, b"{}"), layers, artifact_type="application/vnd.example.report.v1")
    r = put_manifest(server, ns, "report", body, OCI_MANIFEST)
    assert r.status_code == 201
    digest = r.headers["Docker-Content-Digest"]
    _, dom = get(server, f"/_ui/namespaces/{ns}")
    assert dom.one("tr", data_tag="report").one("span", cls="badge artifact").text() == \
        "application/vnd.example.report.v1"
    r, dom = get(server, f"/_ui/namespaces/{ns}/manifests/{digest}")
    rows = dom.one("section", id="files").select("tr")[1:]
    assert [tr.select("td")[0].text() for tr in rows] == list(files)
    assert [tr.select("td")[3].text() for tr in rows] == ["300 B", "40 B"]
    assert HOSTILE not in r.text and str(markupsafe.escape(HOSTILE)) in r.text


def test_the_manifest_page_shows_config_layers_and_annotations_escaped(server):
    ns = f"team/detail-{uuid.uuid4().hex[:8]}"
    config = {"created": "2024-05-01T10:00:00Z",
              "config": {"Entrypoint": ["/bin/app", HOSTILE], "Cmd": ["--serve"],
                         "Env": ["PATH=/usr/bin", "API_TOKEN=hunter2-secret-value", f"X{HOSTILE}=1"],
                         "Labels": {"org.opencontainers.image.source": "https://example.com/app",
                                    f"evil{HOSTILE}": HOSTILE}}}
    digest, body = push_image(server, ns, "v1", arch="arm64", variant="v8", config=config, layers=3,
                              annotations={"org.opencontainers.image.description": HOSTILE})
    r, dom = get(server, f"/_ui/namespaces/{ns}/manifests/{digest}")
    assert HOSTILE not in r.text and "<script>" not in r.text
    assert "hunter2-secret-value" not in r.text   # env values are never shown
    crumbs = [li.text() for li in dom.one("nav", cls="crumbs").select("li")]
    assert crumbs == ["Repositories", "team", ns, digest]
    manifest = dom.one("section", id="manifest")
    text = manifest.text()
    assert digest in text and OCI_MANIFEST in text and "v1" in text
    assert manifest.one("table", cls="kv").text() == f"org.opencontainers.image.description {HOSTILE}"
    cfg = dom.one("section", id="config")
    assert cfg.one("span", cls="badge platform").text() == "linux/arm64/v8"
    assert cfg.select("time", datetime="2024-05-01T10:00:00Z")
    env = [c.text() for c in cfg.one("dd", cls="env").select("code")]
    assert env == ["API_TOKEN", "PATH", f"X{HOSTILE}"]
    assert "https://example.com/app" in cfg.text() and f"evil{HOSTILE} {HOSTILE}" in cfg.one("table").text()
    assert cfg.select("code")[0].text() == json.dumps(["/bin/app", HOSTILE])
    layers = dom.one("section", id="layers")
    doc = json.loads(body)
    assert [tr.attrs["data-digest"] for tr in layers.select("tr", data_digest=True)] == \
        [b["digest"] for b in doc["layers"]]
    total = layers.one("tr", cls="total").select("td")[-1].text()
    assert total == size(sum(b['size'] for b in doc['layers']))
    assert "No index" in dom.one("section", id="referenced-by").text()
    assert not dom.select("section", id="replication") and not dom.select("section", id="cache")
    get(server, f"/_ui/namespaces/{ns}/manifests/sha256:{'0' * 64}", status=404)


# -- deletes

def confirm_form(server, url: str):
    _, dom = get(server, url)
    (form,) = dom.select("form", method="post")
    assert "action" not in form.attrs   # posts back to the confirmation page's own URL
    return dom, form


def test_deleting_a_tag_then_an_untagged_manifest_after_confirming(server):
    ns = f"team/del-{uuid.uuid4().hex[:8]}"
    digest, body = push_image(server, ns, "v1")
    tag_as(server, ns, body, "v2")
    other, _ = push_image(server, ns)     # untagged
    _, dom = get(server, f"/_ui/namespaces/{ns}")
    link = dom.one("tr", data_tag="v1").one("a", cls="button danger")
    assert link.text() == "Delete" and link.attrs["href"] == f"/_ui/namespaces/{ns}/tags/v1/delete"
    page, form = confirm_form(server, link.attrs["href"])
    assert form.one("button", cls="danger").text() == "Delete tag"
    assert "v1" in page.one("main").text() and page.select("span", title=digest)
    # Without the browser's same-origin marker the post is refused and nothing changes.
    assert requests.post(server.url + link.attrs["href"], timeout=10).status_code == 403
    r = requests.post(server.url + link.attrs["href"], headers=SAME, allow_redirects=False, timeout=10)
    assert r.status_code == 303 and r.headers["Location"].startswith(f"/_ui/namespaces/{ns}?")
    _, dom = get(server, r.headers["Location"])
    assert dom.one("p", cls="notice", role="status").text() == "Tag v1 deleted."
    assert not dom.select("tr", data_tag="v1") and dom.select("tr", data_tag="v2")
    assert requests.get(server.v2(f"{ns}/tags/list"), timeout=10).json()["tags"] == ["v2"]
    assert requests.head(server.v2(f"{ns}/manifests/{digest}"), timeout=10).status_code == 200

    row = dom.one("table", id="untagged").one("tr", data_digest=other)
    link = row.one("a", cls="button danger").attrs["href"]
    assert link == f"/_ui/namespaces/{ns}/manifests/{other}/delete"
    _, form = confirm_form(server, link)
    assert form.one("button", cls="danger").text() == "Delete manifest"
    r = requests.post(server.url + link, headers=SAME, allow_redirects=False, timeout=10)
    assert r.status_code == 303
    _, dom = get(server, r.headers["Location"])
    assert dom.one("p", cls="notice").text() == f"Manifest {other} deleted."
    assert not dom.select("tr", data_digest=other)
    assert requests.head(server.v2(f"{ns}/manifests/{other}"), timeout=10).status_code == 404
    # The manifest page's Delete takes its tags with it, as the confirmation says.
    _, dom = get(server, f"/_ui/namespaces/{ns}/manifests/{digest}")
    link = dom.one("section", id="manifest").select("a", cls="button danger",
                                                    href=f"/_ui/namespaces/{ns}/manifests/{digest}/delete")
    assert link
    page, _ = confirm_form(server, link[0].attrs["href"])
    assert "v2" in page.one("main").text()
    r = requests.post(server.url + link[0].attrs["href"], headers=SAME, allow_redirects=False, timeout=10)
    assert r.status_code == 303
    assert requests.get(server.v2(f"{ns}/tags/list"), timeout=10).status_code == 404
    # The namespace is empty now: the page the delete leads to says what happened (200); without
    # that notice the namespace is not found (404), and a crafted notice link puts nothing on it.
    _, dom = get(server, r.headers["Location"])
    assert dom.one("p", cls="notice").text() == f"Manifest {digest} deleted."
    _, dom = get(server, f"/_ui/namespaces/{ns}", done="tag-deleted", ref="<b>x</b>", status=404)
    assert not dom.select("p", cls="notice")


def test_immutable_tags_offer_no_delete_and_a_post_is_refused(server):
    ns = f"locked/imm-{uuid.uuid4().hex[:8]}"
    digest, body = push_image(server, ns, "v1")
    dev, _ = push_image(server, ns, "dev-1")
    _, dom = get(server, f"/_ui/namespaces/{ns}")
    assert not dom.one("tr", data_tag="v1").select("a", cls="danger")
    assert dom.one("tr", data_tag="v1").select("span", cls="badge")[0].text() == "immutable"
    assert dom.one("tr", data_tag="dev-1").select("a", cls="button danger")
    for path in (f"/_ui/namespaces/{ns}/tags/v1/delete", f"/_ui/namespaces/{ns}/manifests/{digest}/delete"):
        r, dom = get(server, path, status=409)
        assert not dom.select("form", method="post")
        assert "immutable" in dom.one("p", cls="notice error").text()
        r = requests.post(server.url + path, headers=SAME, allow_redirects=False, timeout=10)
        assert r.status_code == 409 and "immutable" in parse(r.text).one("p", cls="notice error").text()
    assert requests.get(server.v2(f"{ns}/tags/list"), timeout=10).json()["tags"] == ["dev-1", "v1"]
    _, dom = get(server, f"/_ui/namespaces/{ns}/manifests/{digest}")
    assert not dom.select("a", cls="danger")
    r = requests.post(f"{server.url}/_ui/namespaces/{ns}/tags/dev-1/delete", headers=SAME, allow_redirects=False,
                      timeout=10)
    assert r.status_code == 303
    assert requests.get(server.v2(f"{ns}/tags/list"), timeout=10).json()["tags"] == ["v1"]


# -- the policy

CAROL, DAVE = ("carol", "only-mine"), ("dave", "admin-pw")
CAROL_READS = ("identity.username == 'carol' && has(request.namespace) && request.namespace == 'team/mine' && "
               "request.action in ['list-revisions', 'list-tags', 'get-manifest', 'get-blob', 'get-referrers']")


@pytest.fixture(scope="module")
def guarded(tmp_path_factory):
    """Deny by default: dave may do anything; carol may read team/mine only (and the UI's assets)."""
    hasher = argon2.PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    workdir = tmp_path_factory.mktemp("angos-ui-guarded")
    port = free_port()
    text = angos_config(workdir / "data", port, 2, policy="deny").replace(
        '[global.access_policy]\ndefault = "deny"\n', "")
    text += f"""
[global.access_policy]
default = "deny"
rules = [
  "identity.username == 'dave'",
  "identity.username == 'carol' && request.action in ['ui-asset', 'ui-config', 'list-repositories', 'list-namespaces']",
  "{CAROL_READS}",
]
[auth.identity.carol]
username = "carol"
password = "{hasher.hash(CAROL[1])}"
[auth.identity.dave]
username = "dave"
password = "{hasher.hash(DAVE[1])}"
""" + UI
    srv = AngosServer(workdir, text, port).start()
    yield srv
    srv.stop(timeout=10)


def test_a_user_who_may_read_one_namespace_sees_only_it_and_no_buttons(guarded):
    srv = guarded
    digest, body = push_image(srv, "team/mine", "v1", auth=DAVE)
    push_image(srv, "team/mine", auth=DAVE)   # an untagged one
    push_image(srv, "team/other", "v1", auth=DAVE)
    push_image(srv, "loose/thing", "v1", auth=DAVE)
    _, dom = get(srv, "/_ui/", auth=DAVE)
    assert {tr.attrs["data-namespace"] for tr in dom.select("tr", data_namespace=True)} == \
        {"team/mine", "team/other", "loose/thing"}
    for path in ("/_ui/", "/_ui/repositories/team"):
        _, dom = get(srv, path, auth=CAROL)
        assert [tr.attrs["data-namespace"] for tr in dom.select("tr", data_namespace=True)] == ["team/mine"]
        assert [s.attrs["data-repository"] for s in dom.select("section", cls="group")] == ["team"]
    r, dom = get(srv, "/_ui/namespaces/team/mine", auth=CAROL)
    assert dom.select("tr", data_tag="v1") and dom.select("table", id="untagged")
    assert not dom.select("a", cls="danger") and not dom.select("form", method="post")
    assert "/delete" not in r.text and "Replication status" not in r.text
    r, dom = get(srv, f"/_ui/namespaces/team/mine/manifests/{digest}", auth=CAROL)
    assert not dom.select("a", cls="danger") and "/delete" not in r.text
    # Asking for the deletes anyway: a polite page without a form, and a refused post.
    for path in ("/_ui/namespaces/team/mine/tags/v1/delete", f"/_ui/namespaces/team/mine/manifests/{digest}/delete"):
        _, dom = get(srv, path, auth=CAROL, status=403)
        assert not dom.select("form", method="post")
        assert "access policy" in dom.one("p", cls="notice error").text()
        r = requests.post(srv.url + path, auth=CAROL, headers=SAME, allow_redirects=False, timeout=10)
        assert r.status_code == 403 and r.headers["Content-Type"].startswith("text/html")
    assert requests.get(srv.v2("team/mine/tags/list"), auth=DAVE, timeout=10).json()["tags"] == ["v1"]
    # Other namespaces are refused outright, on every page.
    for path in ("/_ui/namespaces/team/other", f"/_ui/namespaces/team/other/manifests/{digest}",
                 "/_ui/namespaces/team/other/tags/v1/delete"):
        assert requests.get(srv.url + path, auth=CAROL, timeout=10).status_code == 403, path
    # dave sees the buttons carol does not.
    _, dom = get(srv, "/_ui/namespaces/team/mine", auth=DAVE)
    assert dom.one("tr", data_tag="v1").select("a", cls="button danger")
    # Nobody signed in: refused with the Basic challenge.
    r = requests.get(srv.url + "/_ui/namespaces/team/mine", timeout=10)
    assert r.status_code == 401 and r.headers["WWW-Authenticate"].startswith("Basic")
    assert parse(r.text).one("h1").text() == "Sign in required"


# -- replication and pull-through

def test_replicated_and_pull_through_namespaces_show_their_state(angos_factory):
    upstream = angos_factory()
    _, body = push_image(upstream, "library/app", "v1", layers=2)
    downstream = angos_factory()
    srv = angos_factory(extra=UI + f"""
[[repository."team".downstream]]
name = "peer"
url = "{downstream.url}"
[repository."hub"]
[[repository."hub".upstream]]
url = "{upstream.url}"
""")
    digest, _ = push_image(srv, "team/rep", "v1")
    _, dom = get(srv, "/_ui/namespaces/team/rep")
    assert dom.one("p", cls="links").select("a", href="/_ui/replication/team/rep")
    _, dom = get(srv, f"/_ui/namespaces/team/rep/manifests/{digest}")
    rep = dom.one("section", id="replication")
    assert [th.text() for th in rep.select("th")] == ["tag", "peer"]
    assert rep.select("tr", data_tag="v1")
    wait_for(lambda: requests.head(downstream.v2(f"team/rep/manifests/{digest}"), timeout=10).status_code == 200,
             timeout=60, what="the tag on the downstream")
    wait_for(lambda: "in sync" in get(srv, f"/_ui/namespaces/team/rep/manifests/{digest}")[1]
             .one("section", id="replication").one("tr", data_tag="v1").text(), timeout=60,
             what="in sync on the page")

    r = requests.get(srv.v2("hub/library/app/manifests/v1"), headers={"Accept": OCI_MANIFEST}, timeout=30)
    assert r.status_code == 200
    cached = r.headers["Docker-Content-Digest"]
    _, dom = get(srv, "/_ui/")
    assert dom.one("section", cls="group", data_repository="hub").select("span", cls="badge")[0].text() == \
        "pull-through"
    _, dom = get(srv, "/_ui/namespaces/hub/library/app")
    assert upstream.url in dom.one("p", cls="links").text()
    _, dom = get(srv, "/_ui/namespaces/hub/library/not-yet")  # not cached: still a page (200), saying so
    assert dom.one("p", cls="empty").text() == \
        f"Nothing of hub/library/not-yet is cached yet: a pull fetches it from {upstream.url} ."  # text() spaces elements
    _, dom = get(srv, f"/_ui/namespaces/hub/library/app/manifests/{cached}")
    cache = dom.one("section", id="cache")
    assert upstream.url in cache.text()
    assert re.search(r"layers cached [0-2] of 2", cache.text())
    assert not dom.select("section", id="replication")
    layer = json.loads(body)["layers"][0]["digest"]
    assert requests.get(srv.v2(f"hub/library/app/blobs/{layer}"), timeout=30).status_code == 200

    def cached_layers():
        text = get(srv, f"/_ui/namespaces/hub/library/app/manifests/{cached}")[1].one("section", id="cache").text()
        return int(re.search(r"layers cached ([0-2]) of 2", text).group(1)) >= 1
    wait_for(cached_layers, what="the pulled layer counted as cached")
