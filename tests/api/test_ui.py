"""The jobs admin UI over real HTTP: off by default; with ``[ui] enabled`` it lists pending and
failed jobs per queue, retries and deletes them through plain forms, escapes what jobs carry,
refuses cross-site form posts, and answers to the same policy actions as the jobs API."""

from __future__ import annotations

import html
import re

import pytest
import requests

from angos.config import load_config
from angos.queue.core import JobQueue
from tests.conftest import AngosServer, angos_config, free_port, wait_for
from tests.queue.conftest import JOB_ENV, read_lines

from .helpers import push_image

UI = '[ui]\nenabled = true\nname = "Test Registry"\n[repository."team"]\n'


def test_the_ui_is_off_unless_enabled(angos):
    for path in ("/_ui/jobs", "/_ui/config", "/_ui/assets/ui.css"):
        r = requests.get(angos.url + path, timeout=10)
        assert r.status_code == 404 and r.json()["errors"][0]["code"] == "NAME_UNKNOWN"  # no UI, no UI pages


@pytest.fixture(scope="module")
def ui_server(tmp_path_factory):
    """A server with the UI on, draining test job kinds in-process; a producer queue; an output dir."""
    workdir = tmp_path_factory.mktemp("angos-ui")
    port = free_port()
    server = AngosServer(workdir, angos_config(workdir / "data", port, 2, UI), port, JOB_ENV).start()
    q = JobQueue(load_config([str(server.config_path)]), "replication")
    yield server, q, tmp_path_factory.mktemp("ui-jobs")
    q.close()
    server.stop(timeout=10)


def forms(page: str) -> list[str]:
    """The action URLs of the page's forms, unescaped."""
    return [html.unescape(a) for a in re.findall(r'<form method="post" action="([^"]+)"', page)]


def test_failed_jobs_are_listed_escaped_and_a_retry_runs_them_again(ui_server):
    server, q, out = ui_server
    fix = out / "fixed"
    lock_key = "ui/<script>alert(1)</script>"
    q.submit("test.flaky", lock_key, {"dir": str(out), "fixed_by": str(fix), "name": "retry"})
    page_url = f"{server.url}/_ui/jobs/failed?queue=replication"

    def listed():
        r = requests.get(page_url, timeout=10)
        assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/html")
        return r.text if "RuntimeError: boom" in r.text else None

    page = wait_for(listed, what="the dead letter on the page")
    assert "<script>alert(1)</script>" not in page
    assert html.escape(lock_key) in page
    assert "Test Registry" in page
    (retry,) = [a for a in forms(page) if a.endswith("/retry?queue=replication")]
    key = retry.split("/")[-2]

    fix.touch()
    same = {"Origin": server.url}   # what a browser sends with the page's own form
    r = requests.post(server.url + retry, allow_redirects=False, timeout=10, headers=same)
    assert r.status_code == 303
    r = requests.get(server.url + r.headers["Location"], timeout=10)
    assert f"Job {key} is pending again." in r.text
    wait_for(lambda: any(line[0] == "done" for line in read_lines(out / "retry.log")), what="the retried run")
    assert key not in requests.get(page_url, timeout=10).text
    # A key that is no longer failed, or malformed, is a 404, not a silent success.
    assert requests.post(server.url + retry, timeout=10, headers=same).status_code == 404
    assert requests.post(f"{server.url}/_ui/jobs/failed/..%2f..%2fx/retry?queue=replication",
                         timeout=10, headers=same).status_code == 404


def test_pending_jobs_are_listed_and_deleted_only_by_same_site_posts(ui_server):
    server, q, out = ui_server
    q.submit("test.record", "ui-later", {"dir": str(out), "name": "later"}, delay=600)
    page = requests.get(f"{server.url}/_ui/jobs?queue=replication", timeout=10).text
    assert "ui-later" in page and "pending" in page
    (delete,) = [a for a in forms(page) if "/pending/" in a]
    key = delete.split("/")[-2]

    https_twin = server.url.replace("http://", "https://")
    port_twin = server.url.rsplit(":", 1)[0] + ":1"
    for hostile in ({"Origin": "http://evil.example"}, {"Origin": "null"}, {"Sec-Fetch-Site": "cross-site"},
                    {"Sec-Fetch-Site": "same-site", "Origin": server.url}, {"Origin": https_twin},
                    {"Origin": port_twin}, {}):   # scheme and port compared; no marker at all on a form post
        r = requests.post(server.url + delete, headers=hostile, allow_redirects=False, timeout=10)
        assert r.status_code == 403, hostile
        assert r.headers["Content-Type"].startswith("text/html") and "<h1>Not allowed</h1>" in r.text, hostile
    assert key in requests.get(f"{server.url}/_ui/jobs?queue=replication", timeout=10).text

    r = requests.post(server.url + delete, headers={"Origin": server.url, "Sec-Fetch-Site": "same-origin"},
                      allow_redirects=False, timeout=10)
    assert r.status_code == 303
    page = requests.get(server.url + r.headers["Location"], timeout=10).text
    assert f"Job {key} deleted." in page
    assert "ui-later" not in page
    # Gone from the store itself, not just from the page: the key no longer coalesces.
    assert q.get(key) is None
    assert q.submit("test.record", "ui-later", {"dir": str(out), "name": "later"}, delay=600) is True
    (again,) = [j for j in q.list_pending()[0] if j["lock_key"] == "ui-later"]
    assert q.delete_pending(again["storage_key"]) is True  # leave the module's queue as it was


def test_notices_are_fixed_texts_and_bad_parameters_are_refused(ui_server):
    server, _, _ = ui_server
    r = requests.get(f"{server.url}/_ui/jobs", params={"queue": "replication", "done": "Send your password to x",
                                                        "key": "0000000000000000-x"}, timeout=10)
    assert r.status_code == 200 and "password" not in r.text
    assert requests.get(f"{server.url}/_ui/jobs?queue=nope", timeout=10).status_code == 404
    assert requests.get(f"{server.url}/_ui/jobs?queue=cache&after=bogus", timeout=10).status_code == 404
    assert requests.get(f"{server.url}/_ui/jobs?queue=cache", timeout=10).status_code == 200


def test_config_and_stylesheet(ui_server):
    server, _, _ = ui_server
    assert requests.get(f"{server.url}/_ui/config", timeout=10).json() == {"name": "Test Registry"}
    css = requests.get(f"{server.url}/_ui/assets/ui.css", timeout=10)
    assert css.status_code == 200 and css.headers["Content-Type"].startswith("text/css")
    assert requests.get(f"{server.url}/_ui/assets/config.toml", timeout=10).status_code == 404


def test_the_policy_sees_the_jobs_actions(angos_factory, tmp_path):
    text = angos_config(tmp_path / "data", 0, policy="deny").replace(
        'default = "deny"\n',
        'default = "deny"\nrules = ["request.action in [\'ui-asset\', \'ui-config\']",'
        ' "request.action == \'list-jobs\' && request.queue == \'cache\'"]\n') + UI
    server = angos_factory(config_text=text.replace("port = 0", "port = @PORT@"))
    assert requests.get(f"{server.url}/_ui/config", timeout=10).status_code == 200
    assert requests.get(f"{server.url}/_ui/assets/ui.css", timeout=10).status_code == 200
    assert requests.get(f"{server.url}/_ui/jobs?queue=cache", timeout=10).status_code == 200
    denied = requests.get(f"{server.url}/_ui/jobs?queue=replication", timeout=10)
    assert denied.status_code == 401 and denied.headers["WWW-Authenticate"].startswith("Basic ")
    assert "<h1>Sign in required</h1>" in denied.text
    assert requests.get(f"{server.url}/_ui/jobs/failed?queue=cache", timeout=10).status_code == 401


def test_browsing_repositories_namespaces_and_manifests(ui_server):
    # The pages themselves are pinned in test_ui_browse.py; here, that they are reachable and that
    # their errors are pages with the status the API would answer.
    server, _, _ = ui_server
    push_image(server, "team/app", tag="v1")
    assert requests.get(f"{server.url}/_ui/", timeout=10).status_code == 200
    assert requests.get(f"{server.url}/_ui/repositories/team", timeout=10).status_code == 200
    assert requests.get(f"{server.url}/_ui/namespaces/team/app", timeout=10).status_code == 200
    for path, status in (("/_ui/repositories/nope", 404), ("/_ui/namespaces/Bad..Name", 400)):
        r = requests.get(server.url + path, timeout=10)
        assert r.status_code == status and r.headers["Content-Type"].startswith("text/html"), path
