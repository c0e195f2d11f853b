"""The UI's replication pages: reachable from a namespace's page, one row per downstream and one
cell per tag and downstream, refreshing themselves, escaped, behind their policy action."""

from __future__ import annotations

import html
import re

import requests

from tests.conftest import wait_for
from tests.replication.conftest import source_config
from tests.replication.test_status import HELD, Worker, push

UI = '\n[ui]\nenabled = true\nname = "Test Registry"\n'


def test_replication_pages_show_each_downstream_and_each_tag(angos_factory):
    peer = angos_factory()
    # A second downstream with a name that needs escaping, which never answers.
    source = angos_factory(config_text=source_config({"name": "peer", "url": peer.url},
                                                     {"name": "<b>far</b>", "url": "http://127.0.0.1:9"},
                                                     extra=HELD + UI))
    ns = "nginx/app"
    d = push(source, ns, "v1", "one")
    page = requests.get(f"{source.url}/_ui/namespaces/{ns}", timeout=10).text
    assert f'href="/_ui/replication/{ns}"' in page

    page = requests.get(f"{source.url}/_ui/replication/{ns}", timeout=10)
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    assert '<meta http-equiv="refresh" content="5">' in page.text
    assert "<b>far</b>" not in page.text and html.escape("<b>far</b>") in page.text
    assert d in page.text and page.text.count("<strong>pending</strong>") == 2
    assert f'<a href="/_ui/namespaces/{ns}" class="namespace">' in page.text  # back to the namespace's page
    assert f'<a href="/_ui/namespaces/{ns}">{ns}</a>' in page.text  # and in the breadcrumbs

    with Worker(source):  # the queue is held until now
        wait_for(lambda: "<strong>in sync</strong>" in requests.get(f"{source.url}/_ui/replication/{ns}",
                                                                  timeout=10).text, what="in sync on the page")
        wait_for(lambda: "state-down" in requests.get(f"{source.url}/_ui/replication", timeout=10).text,
                 what="the unreachable downstream shown down")
    page = requests.get(f"{source.url}/_ui/replication", timeout=10).text
    header = re.search(r"<thead><tr>(.*?)</tr></thead>", page, re.S).group(1)
    assert re.findall(r"<th[^>]*>(.*?)</th>", header)[:4] == ["downstream", "repositories", "state", "last success"]
    rows = dict(re.findall(r'<tr data-downstream="([^"]*)">(.*?)</tr>', page, re.S))
    assert set(rows) == {"peer", html.escape("<b>far</b>")}
    assert '<td class="state-up"><strong>up</strong>' in rows["peer"] and peer.url in rows["peer"]
    far = rows[html.escape("<b>far</b>")]
    assert '<td class="state-down"><strong>down</strong>' in far and "<b>far</b>" not in page
    # The unreachable downstream's error: one line in the row, the full text one click away.
    error = re.search(r'<td class="error">(.*?)</td>', far, re.S).group(1)
    one_line = (r'<details class="error"><summary>[^<\n]+</summary><pre>[^<]+</pre></details>'
                r'|<span class="error">[^<\n]+</span>')
    assert re.fullmatch(rf'\s*({one_line})(<div class="muted"><time [^>]+>[^<]+</time></div>)?\s*', error), error
    assert 'href="/_ui/repositories/nginx"' in page  # the repository, linked to its namespaces
    assert requests.get(f"{source.url}/_ui/replication/Bad..Name", timeout=10).status_code == 400


def test_replication_pages_answer_to_their_policy_action(angos_factory):
    rule = "request.action != 'get-replication-status'"
    source = angos_factory(config_text=source_config(
        {"name": "peer", "url": "http://127.0.0.1:9"},
        extra=HELD + UI + f'\n[global.access_policy]\ndefault = "deny"\nrules = ["{rule}"]\n'))
    push(source, "nginx/app", "v1", "one")
    for path in ("/_ui/replication", "/_ui/replication/nginx/app"):
        r = requests.get(source.url + path, timeout=10)
        assert r.status_code == 401 and r.headers["WWW-Authenticate"].startswith("Basic "), path
    # The namespace page itself is allowed; its link leads to the refused page.
    assert requests.get(f"{source.url}/_ui/namespaces/nginx/app", timeout=10).status_code == 200
