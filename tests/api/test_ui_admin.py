"""The UI's admin pages over real HTTP: jobs (errors one line with the full text behind
``<details>``, counts per queue in the tabs, links from a job to its namespace and tag), a
namespace's uploads (listed with their size, cancelled through a form as ``DELETE
/v2/<ns>/blobs/uploads/<uuid>`` would), error pages (a sign-in page with the API's challenge for
an anonymous visitor, 403 and 404 pages; ``/v2/`` and ``/_ext/`` errors stay the OCI JSON) and
the policy: no Retry, Delete or Cancel button, nor namespace link, a visitor may not use."""

from __future__ import annotations

import html
import re

import pytest
import requests

from angos.config import load_config
from angos.queue.core import JobQueue
from angos.replication.jobs import ReferrersJob, SyncJob
from tests.auth.conftest import identity_toml
from tests.conftest import AngosServer, angos_config, free_port, wait_for
from tests.queue.conftest import JOB_ENV

from .helpers import assert_oci_error, random_bytes

UI = '[ui]\nenabled = true\nname = "Test Registry"\n[repository."team"]\n'
SAME = {"Sec-Fetch-Site": "same-origin"}  # what a browser sends with the page's own form


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """An allow-all server with the UI on, draining the test job kinds in-process."""
    workdir = tmp_path_factory.mktemp("angos-ui-admin")
    port = free_port()
    srv = AngosServer(workdir, angos_config(workdir / "data", port, 2, UI), port, JOB_ENV).start()
    yield srv
    srv.stop(timeout=10)


def queue(srv, name: str) -> JobQueue:
    return JobQueue(load_config([str(srv.config_path)]), name)


def rows(page: str, attr: str) -> dict[str, str]:
    """``{value of attr: the row's inner HTML}`` for the page's ``<tr attr="...">`` rows."""
    return {html.unescape(k): v for k, v in re.findall(rf'<tr {attr}="([^"]*)">(.*?)</tr>', page, re.S)}


def tab_counts(page: str) -> dict[tuple[str, str], str]:
    """``{(queue, "pending"|"failed"): count text}`` from the queue tabs."""
    out = {}
    for q, body in re.findall(r'<li data-queue="([^"]+)">(.*?)</li>', page, re.S):
        for kind, count in re.findall(r'data-list="(\w+)"[^>]*>\w+ <span class="count[^"]*">([^<]+)</span>', body):
            out[(q, kind)] = count
    return out


def forms(page: str) -> list[str]:
    return [html.unescape(a) for a in re.findall(r'<form method="post" action="([^"]+)"', page)]


def failed_page(srv, q: str, until) -> str:
    def ready():
        text = requests.get(f"{srv.url}/_ui/jobs/failed?queue={q}", timeout=10).text
        return text if until(text) else None
    return wait_for(ready, what=f"the failed-jobs page of {q}")


def test_a_failed_jobs_error_is_one_line_with_the_full_text_behind_details(server, tmp_path):
    q = queue(server, "replication")
    error = "<img src=x onerror=alert(1)> upstream refused\nTraceback (most recent call last):\n" + \
        "".join(f'  File "/srv/angos/x{i}.py", line {i}, in f\n' for i in range(40)) + "RuntimeError: <b>deep</b>"
    payload = SyncJob("team", "peer<i>", "team/app", "v1").payload()
    try:
        q.submit("test.fail_with", "sync|peer<i>|team/app|v1", {**payload, "error": error})
        page = failed_page(server, "replication", lambda t: "upstream refused" in t)
    finally:
        q.close()
    (row,) = [r for r in rows(page, "data-job").values() if "upstream refused" in r]
    m = re.search(r'<details class="error"><summary>(.*?)</summary><pre>(.*?)</pre></details>', row, re.S)
    assert m, row
    assert html.unescape(m.group(1)) == "TerminalJobError: <img src=x onerror=alert(1)> upstream refused"
    assert html.unescape(m.group(2)) == f"TerminalJobError: {error}"  # every line, escaped
    assert "<img" not in page and "<b>deep</b>" not in page and "<i>" not in page
    # What it works on: the namespace and the tag, linked to the namespace's page; the downstream.
    assert '<a href="/_ui/namespaces/team/app" class="namespace">team/app</a>' in row
    assert '<a href="/_ui/namespaces/team/app#tag-v1" class="tag">v1</a>' in row
    assert "to peer&lt;i&gt;" in row and html.escape("sync|peer<i>|team/app|v1") in row


def test_a_job_names_its_namespace_only_when_its_payload_holds_a_valid_one(server, tmp_path):
    q = queue(server, "cache")
    digest = "sha256:" + "ab" * 32
    try:
        q.submit("test.fail_with", f"blob|{digest}", {"repository": "team", "namespace": "team/cached",
                                                      "digest": digest, "error": "fill one"})
        q.submit("test.fail_with", "odd|<script>", {"namespace": "../<script>", "error": "fill two"})
        referrers = ReferrersJob("team", "peer", "team/signed", digest)
        q.submit("test.fail_with", referrers.lock_key, {**referrers.payload(), "error": "fill three"})
        page = failed_page(server, "cache", lambda t: all(f"fill {n}" in t for n in ("one", "two", "three")))
    finally:
        q.close()
    by_error = {n: r for r in rows(page, "data-job").values() for n in ("one", "two", "three") if f"fill {n}" in r}
    assert '<a href="/_ui/namespaces/team/cached" class="namespace">team/cached</a>' in by_error["one"]
    # A cache fill's digest is a blob (no page); a referrers job's subject is a manifest (its page).
    assert f'<span class="key" title="{digest}">@sha256:abababababab</span>' in by_error["one"]
    assert (f'<a href="/_ui/namespaces/team/signed/manifests/{digest}" class="key digest" title="{digest}">'
            '@sha256:abababababab</a>') in by_error["three"]
    assert "<a " not in by_error["two"] and "odd|&lt;script&gt;" in by_error["two"]
    assert "<script>" not in page


def test_the_queue_tabs_count_pending_and_failed_jobs(server, tmp_path):
    q = queue(server, "webhooks")
    url = f"{server.url}/_ui/jobs?queue=webhooks"
    try:
        before = tab_counts(requests.get(url, timeout=10).text)
        assert set(before) == {(name, kind) for name in ("replication", "cache", "webhooks")
                               for kind in ("pending", "failed")}
        for i in range(3):  # far in the future: they stay pending
            q.submit("test.record", f"ui-count-{i}", {"dir": str(tmp_path), "name": f"c{i}"}, delay=3600)
        q.submit("test.fail_with", "ui-count-failed", {"error": "counted"})
        failed_page(server, "webhooks", lambda t: "counted" in t)
        page = requests.get(url, timeout=10).text
        after = tab_counts(page)
        assert int(after[("webhooks", "pending")]) == int(before[("webhooks", "pending")]) + 3
        assert int(after[("webhooks", "failed")]) == int(before[("webhooks", "failed")]) + 1
        assert {k: v for k, v in after.items() if k[0] != "webhooks"} == \
            {k: v for k, v in before.items() if k[0] != "webhooks"}
        # Pending rows: their next run is ahead, in words, with the exact time on hover.
        (row,) = [r for r in rows(page, "data-job").values() if "ui-count-0" in r]
        assert re.search(r'runs <time datetime="[0-9T:-]+Z" title="[0-9 :-]+ UTC">in (59 minutes|1 hour)</time>',
                         row), row
    finally:
        for job in q.list_pending(None, 1000)[0]:
            if job["lock_key"].startswith("ui-count-"):
                q.delete_pending(job["storage_key"])
        q.close()


def start_upload(srv, ns: str, data: bytes, auth=None) -> str:
    r = requests.post(srv.v2(f"{ns}/blobs/uploads/"), auth=auth, timeout=10)
    assert r.status_code == 202, r.text
    upload_id = r.headers["Docker-Upload-UUID"]
    r = requests.patch(srv.url + r.headers["Location"], data=data, auth=auth, timeout=10,
                       headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 202 and r.headers["Range"] == f"0-{len(data) - 1}", r.text
    return upload_id


def test_uploads_are_listed_with_their_size_and_cancelled_through_the_form(server):
    ns = "team/uploading"
    upload_id = start_upload(server, ns, random_bytes(1536))
    other = start_upload(server, "team/elsewhere", random_bytes(10))
    page_url = f"{server.url}/_ui/namespaces/{ns}/uploads"
    r = requests.get(page_url, timeout=10)
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/html")
    listed = rows(r.text, "data-upload")
    assert set(listed) == {upload_id}  # only this namespace's sessions
    assert re.search(r'<td class="num" title="1536 bytes">1.5 KiB</td>', listed[upload_id])
    assert re.search(r'<time datetime="[^"]+" title="[^"]+ UTC">(just now|1 minute ago)</time>', listed[upload_id])
    (cancel,) = forms(r.text)
    assert cancel == f"/_ui/namespaces/{ns}/uploads/{upload_id}/cancel"
    assert 'href="/_ui/namespaces/team/uploading"' in r.text  # the breadcrumbs lead back to the namespace

    # A form posted from another site (or with no marker) is refused; the upload is untouched.
    for hostile in ({"Sec-Fetch-Site": "cross-site"}, {}):
        refused = requests.post(server.url + cancel, headers=hostile, allow_redirects=False, timeout=10)
        assert refused.status_code == 403 and "<h1>Not allowed</h1>" in refused.text
    assert requests.get(server.v2(f"{ns}/blobs/uploads/{upload_id}"), timeout=10).status_code == 204

    done = requests.post(server.url + cancel, headers=SAME, allow_redirects=False, timeout=10)
    assert done.status_code == 303
    page = requests.get(server.url + done.headers["Location"], timeout=10).text
    assert f'<p class="notice" role="status">Upload {upload_id} cancelled.</p>' in page
    assert rows(page, "data-upload") == {} and f"No uploads in progress in {ns}." in page
    assert_oci_error(requests.get(server.v2(f"{ns}/blobs/uploads/{upload_id}"), timeout=10), 404,
                     "BLOB_UPLOAD_UNKNOWN")
    # Cancelling it again, or one of another namespace from here, is a 404 page; that one lives on.
    for path in (cancel, f"/_ui/namespaces/{ns}/uploads/{other}/cancel"):
        again = requests.post(server.url + path, headers=SAME, allow_redirects=False, timeout=10)
        assert again.status_code == 404 and "<h1>Not found</h1>" in again.text, path
    assert requests.get(server.v2(f"team/elsewhere/blobs/uploads/{other}"), timeout=10).status_code == 204
    # The notice is a fixed text: a crafted link cannot put words on the page.
    crafted = requests.get(page_url, params={"done": "cancelled", "upload": "<b>call 555</b>"}, timeout=10).text
    assert "call 555" not in crafted and 'class="notice"' not in crafted


def test_uploads_are_paged(server):
    ns = "team/many-uploads"
    ids = [start_upload(server, ns, random_bytes(5)) for _ in range(3)]
    first = requests.get(f"{server.url}/_ui/namespaces/{ns}/uploads?n=2", timeout=10).text
    nxt = html.unescape(re.search(r'<a rel="next" href="([^"]+)"', first).group(1))
    second = requests.get(server.url + nxt, timeout=10).text
    assert len(rows(first, "data-upload")) == 2 and len(rows(second, "data-upload")) == 1
    assert set(rows(first, "data-upload")) | set(rows(second, "data-upload")) == set(ids)
    assert 'rel="next"' not in second


def test_errors_on_ui_pages_are_pages_and_the_api_keeps_its_json(server):
    r = requests.get(f"{server.url}/_ui/no/such/page", timeout=10)
    assert r.status_code == 404 and r.headers["Content-Type"].startswith("text/html")
    assert "<h1>Not found</h1>" in r.text and 'href="/_ui/"' in r.text
    r = requests.get(f"{server.url}/_ui/namespaces/Bad..<b>x</b>/uploads", timeout=10)
    assert r.status_code == 400 and "<h1>Bad request</h1>" in r.text and "<b>x</b>" not in r.text
    r = requests.post(f"{server.url}/_ui/jobs", headers=SAME, timeout=10)  # a GET-only page
    assert r.status_code == 405 and r.headers["Content-Type"].startswith("text/html")
    # Every other path answers the OCI error JSON, as before.
    assert_oci_error(requests.get(server.v2("team/none/tags/list"), timeout=10), 404, "NAME_UNKNOWN")
    assert_oci_error(requests.get(f"{server.url}/v2/team/none/nothing/here", timeout=10), 404, "NAME_UNKNOWN")
    assert_oci_error(requests.get(f"{server.url}/_ext/_jobs?queue=nope", timeout=10), 404, "UNSUPPORTED")
    assert_oci_error(requests.post(server.v2("team/x/blobs/uploads/"), headers={"Sec-Fetch-Site": "cross-site"},
                                   timeout=10), 403, "DENIED")
    assert_oci_error(requests.get(f"{server.url}/nowhere", timeout=10), 404, "NAME_UNKNOWN")


# ---------------------------------------------------------------- policy

POLICY = '''
[global.access_policy]
default = "deny"
rules = [
  "request.action in ['ui-asset', 'ui-config']",
  "identity.username == 'admin'",
  "identity.username == 'viewer' && request.action in ['list-jobs', 'list-failed-jobs', 'list-uploads', 'get-replication-status']",
  "identity.username == 'viewer' && request.action == 'list-revisions' && request.namespace == 'team/mine'",
]
'''
ADMIN, VIEWER = ("admin", "admin-pw"), ("viewer", "viewer-pw")


@pytest.fixture(scope="module")
def guarded(tmp_path_factory):
    """A deny-by-default server: ``admin`` may do anything, ``viewer`` only look at the admin
    pages and the namespace ``team/mine``; anonymous visitors nothing but the stylesheet."""
    workdir = tmp_path_factory.mktemp("angos-ui-guarded")
    port = free_port()
    text = angos_config(workdir / "data", port, 2).replace('[global.access_policy]\ndefault = "allow"\n', "")
    text += POLICY + identity_toml(admin=ADMIN[1], viewer=VIEWER[1]) + UI
    srv = AngosServer(workdir, text, port, JOB_ENV).start()
    q = JobQueue(load_config([str(srv.config_path)]), "replication")
    for ns in ("team/mine", "team/theirs"):
        payload = SyncJob("team", "peer", ns, "v1").payload()
        q.submit("test.fail_with", f"sync|peer|{ns}|v1", {**payload, "error": f"failed in {ns}"})
    q.close()
    yield srv
    srv.stop(timeout=10)


def test_an_anonymous_visitor_gets_a_sign_in_page_with_the_apis_challenge(guarded):
    api = requests.get(f"{guarded.url}/_ext/_jobs?queue=replication", timeout=10)
    assert api.status_code == 401
    for path in ("/_ui/jobs?queue=replication", "/_ui/jobs/failed?queue=replication", "/_ui/replication",
                 "/_ui/namespaces/team/mine/uploads", "/_ui/"):
        r = requests.get(guarded.url + path, timeout=10)
        assert r.status_code == 401 and r.headers["Content-Type"].startswith("text/html"), path
        assert r.headers["WWW-Authenticate"] == api.headers["WWW-Authenticate"], path
        assert r.headers["WWW-Authenticate"].startswith('Basic realm="Test Registry"'), path
        assert "<h1>Sign in required</h1>" in r.text and 'class="retry"' in r.text, path
        assert 'href="/_ui/assets/ui.css"' in r.text, path  # a page of the UI, styled like the others
    # Wrong credentials: the same page, asking again.
    r = requests.get(f"{guarded.url}/_ui/jobs?queue=replication", auth=("viewer", "wrong"), timeout=10)
    assert r.status_code == 401 and "<h1>Sign in required</h1>" in r.text and "WWW-Authenticate" in r.headers
    # The registry API still challenges in its own way (Bearer with a scope under /v2/), with JSON.
    v2 = requests.get(guarded.v2("team/mine/tags/list"), timeout=10)
    assert_oci_error(v2, 401, "UNAUTHORIZED")
    assert v2.headers["WWW-Authenticate"].startswith("Bearer ")


def test_a_signed_in_visitor_who_is_refused_gets_a_403_page(guarded):
    r = requests.get(f"{guarded.url}/_ui/", auth=VIEWER, timeout=10)
    assert r.status_code == 403 and r.headers["Content-Type"].startswith("text/html")
    assert "<h1>Not allowed</h1>" in r.text and "WWW-Authenticate" not in r.headers
    def listed():
        text = requests.get(f"{guarded.url}/_ui/jobs/failed?queue=replication", auth=VIEWER, timeout=10).text
        return next(iter(rows(text, "data-job")), None)
    key = wait_for(listed, what="a failed job on the page")
    for action in ("retry", "delete"):
        r = requests.post(f"{guarded.url}/_ui/jobs/failed/{key}/{action}?queue=replication", auth=VIEWER,
                          headers=SAME, allow_redirects=False, timeout=10)
        assert r.status_code == 403 and "<h1>Not allowed</h1>" in r.text, action
    assert key in rows(requests.get(f"{guarded.url}/_ui/jobs/failed?queue=replication", auth=VIEWER,
                                    timeout=10).text, "data-job")


def test_no_button_or_link_a_visitor_may_not_use(guarded):
    def page(auth) -> str:
        def both():
            text = requests.get(f"{guarded.url}/_ui/jobs/failed?queue=replication", auth=auth, timeout=10).text
            return text if text.count("failed in team/") == 2 else None
        return wait_for(both, what="both failed jobs on the page")

    admin, viewer = page(ADMIN), page(VIEWER)
    assert len([a for a in forms(admin) if a.endswith("/retry?queue=replication")]) == 2
    assert len([a for a in forms(admin) if "/delete?queue=replication" in a]) == 2
    assert forms(viewer) == [] and ">Retry<" not in viewer and ">Delete<" not in viewer
    # The viewer may open team/mine's page, not team/theirs's: only the first is a link.
    assert '<a href="/_ui/namespaces/team/mine" class="namespace">' in viewer
    assert 'href="/_ui/namespaces/team/theirs' not in viewer
    assert '<span class="namespace">team/theirs</span>' in viewer
    assert '<a href="/_ui/namespaces/team/theirs" class="namespace">' in admin

    # Uploads: the admin's session is listed to both; only the admin gets a Cancel button.
    upload_id = start_upload(guarded, "team/mine", random_bytes(100), auth=ADMIN)
    url = f"{guarded.url}/_ui/namespaces/team/mine/uploads"
    as_admin, as_viewer = (requests.get(url, auth=a, timeout=10).text for a in (ADMIN, VIEWER))
    assert set(rows(as_admin, "data-upload")) == set(rows(as_viewer, "data-upload")) == {upload_id}
    assert forms(as_admin) == [f"/_ui/namespaces/team/mine/uploads/{upload_id}/cancel"]
    assert forms(as_viewer) == [] and ">Cancel<" not in as_viewer
    r = requests.post(f"{url}/{upload_id}/cancel", auth=VIEWER, headers=SAME, allow_redirects=False, timeout=10)
    assert r.status_code == 403 and "<h1>Not allowed</h1>" in r.text
    assert requests.get(guarded.v2(f"team/mine/blobs/uploads/{upload_id}"), auth=ADMIN, timeout=10).status_code == 204
