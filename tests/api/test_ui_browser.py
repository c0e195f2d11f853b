"""The web UI in a real browser (Debian's headless Chromium through Selenium, see
:mod:`tests.api.ui_browser`), against running servers that hold every kind of content the UI
shows: a multi-arch index with a signature and an SBOM as referrers, a single-platform image, an
untagged manifest, an ORAS-style artifact, an unconfigured namespace, a pull-through namespace
(filled from a second Angos), a replicated one (to that same second Angos), an upload in
progress, and pending and failed jobs.

Every page loads without console errors, holds the elements of its page contract, fits at
1280 px (the page and each table, with every ``<details>`` open) and does not scroll sideways
at 800 px; every link on it leads to a page (and to the part of it it names); its text meets
WCAG AA contrast in both themes and every control has a name; the keyboard's first stop is
"Skip to content"; the theme toggle switches and is remembered; a tag is deleted through its
confirmation page, with scripts on and with scripts off. Screenshots of every page at both
widths are saved as test artifacts (the path is printed; ``-s`` shows it) and, with
``ANGOS_UPDATE_SCREENSHOTS=1``, the README's ``docs/images/ui-light.png`` and ``ui-dark.png``
are written.

One browser and one set of servers serve the whole module (``scope="module"``); each test
loads the pages it needs, so the tests do not depend on each other's order, except that the
delete test removes only what it created for itself.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from urllib.parse import urlparse

import pytest
import requests

from angos.config import load_config
from angos.queue.core import JobQueue
from angos.replication.jobs import SyncJob
from tests.conftest import ROOT, AngosServer, angos_config, free_port, skopeo, stop_all, wait_for
from tests.images import multi_arch_index, single_platform_image
from tests.queue.conftest import JOB_ENV

from . import ui_browser
from .helpers import (OCI_MANIFEST, descriptor, digest_of, image_manifest, push_blob, push_image, put_manifest)

pytestmark = pytest.mark.slow

COSIGN = "application/vnd.dev.cosign.artifact.sig.v1+json"
SBOM = "application/spdx+json"
ARTIFACT = "application/vnd.example.docs.v1"
EMPTY = "application/vnd.oci.empty.v1+json"
SCREENSHOTS = ROOT / "docs" / "images"

# The main server's configuration beyond conftest.angos_config's allow-all filesystem one.
MAIN_EXTRA = """\
[ui]
enabled = true
name = "Angos"

[repository."team"]

[repository."rep"]
[[repository."rep".downstream]]
name = "peer"
url = "{peer}"

[repository."hub"]
[[repository."hub".upstream]]
url = "{peer}"
"""


def _server(tmp_path_factory, workers: int, extra: str = "", env: dict | None = None) -> AngosServer:
    workdir = tmp_path_factory.mktemp("angos-ui-browser")
    port = free_port()
    return AngosServer(workdir, angos_config(workdir / "data", port, workers, extra), port, env).start()


class Content:
    """What the module's servers hold, by name, for the tests to look for."""


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    peer = _server(tmp_path_factory, 1)
    main = _server(tmp_path_factory, 2, MAIN_EXTRA.format(peer=peer.url), JOB_ENV)
    queue = JobQueue(load_config([str(main.config_path)]), "replication")
    try:
        yield _fill(main, peer, queue, tmp_path_factory.mktemp("ui-browser-content"))
    finally:
        queue.close()
        stop_all([main, peer])


def _referrer(server, ns: str, subject: dict, artifact_type: str, payload: bytes, layer_type: str) -> str:
    """Push a manifest that refers to ``subject`` (a signature, an SBOM), untagged; its digest."""
    push_blob(server, ns, b"{}")
    push_blob(server, ns, payload)
    body = image_manifest(descriptor(EMPTY, b"{}"), [descriptor(layer_type, payload)], subject=subject,
                          artifact_type=artifact_type)
    r = put_manifest(server, ns, digest_of(body), body, OCI_MANIFEST)
    assert r.status_code == 201, r.text
    return digest_of(body)


def _fill(main: AngosServer, peer: AngosServer, queue: JobQueue, work: Path) -> Content:
    c = Content()
    c.main, c.peer = main, peer

    # team/app: a multi-arch index (tags 1.0 and latest) signed and with an SBOM, a
    # single-platform image (tag debug), and an untagged manifest.
    c.ns = "team/app"
    index = multi_arch_index(work / "index", "1.0")
    skopeo("copy", "--all", "--dest-tls-verify=false", index.oci_ref, f"docker://{main.host}/{c.ns}:1.0")
    skopeo("copy", "--all", "--dest-tls-verify=false", index.oci_ref, f"docker://{main.host}/{c.ns}:latest")
    c.index, c.children = index.digest, index.manifests
    raw = (index.layout / "blobs" / "sha256" / index.digest.split(":")[1]).read_bytes()
    subject = {"mediaType": index.media_type, "digest": index.digest, "size": len(raw)}
    c.signature = _referrer(main, c.ns, subject, COSIGN, b'{"critical": {}}',
                            "application/vnd.dev.cosign.simplesigning.v1+json")
    c.sbom = _referrer(main, c.ns, subject, SBOM, b'{"spdxVersion": "SPDX-2.3"}', SBOM)
    single = single_platform_image(work / "single", "debug")
    skopeo("copy", "--dest-tls-verify=false", single.oci_ref, f"docker://{main.host}/{c.ns}:debug")
    c.single = single.digest
    c.untagged = push_image(main, c.ns)[0]

    # team/docs: an ORAS-style artifact, files named by their title annotation.
    c.artifact_ns = "team/docs"
    files = {"README.md": b"# docs\n", "chart.tgz": b"\x1f\x8b fake chart"}
    push_blob(main, c.artifact_ns, b"{}")
    layers = []
    for title, data in files.items():
        push_blob(main, c.artifact_ns, data)
        layers.append(descriptor("application/octet-stream", data,
                                 annotations={"org.opencontainers.image.title": title}))
    body = image_manifest(descriptor(EMPTY, b"{}"), layers, artifact_type=ARTIFACT)
    r = put_manifest(main, c.artifact_ns, "v1", body, OCI_MANIFEST)
    assert r.status_code == 201, r.text
    c.artifact, c.files = r.headers["Docker-Content-Digest"], list(files)

    # misc/tool: a namespace under no configured repository.
    c.unconfigured = "misc/tool"
    push_image(main, c.unconfigured, tag="v1")

    # rep/app: replicated to the peer (by the server's in-process drain).
    c.replicated = "rep/app"
    c.replicated_digest = push_image(main, c.replicated, tag="v1")[0]   # waited for at the end

    # hub/library/app: pulled through from the peer, so the cache holds it.
    c.cached_ns = "hub/library/app"
    upstream = single_platform_image(work / "upstream", "v1")
    skopeo("copy", "--dest-tls-verify=false", upstream.oci_ref, f"docker://{peer.host}/library/app:v1")
    skopeo("copy", "--src-tls-verify=false", f"docker://{main.host}/{c.cached_ns}:v1", f"oci:{work / 'pulled'}:v1")
    c.cached = upstream.digest

    # team/delete-me: the delete test's own namespace (it removes tag "gone", keeps "keep").
    c.delete_ns = "team/delete-me"
    push_image(main, c.delete_ns, tag="keep")
    push_image(main, c.delete_ns, tag="gone")
    push_image(main, c.delete_ns, tag="gone-without-js")

    # An upload in progress in team/app.
    r = requests.post(main.v2(f"{c.ns}/blobs/uploads/"), timeout=10)
    assert r.status_code == 202, r.text
    location = requests.compat.urljoin(main.url, r.headers["Location"])
    r = requests.patch(location, data=b"x" * 4096, headers={"Content-Type": "application/octet-stream"},
                       timeout=10)
    assert r.status_code == 202, r.text
    c.upload = urlparse(location).path.rstrip("/").rsplit("/", 1)[1]

    # Jobs with replication jobs' payloads (what the jobs pages link from): one waiting (not before
    # ten minutes), and two dead letters, one with a one-line error and one with a traceback.
    def sync(tag: str) -> SyncJob:
        return SyncJob("team", "peer", c.ns, tag)

    queue.submit("test.record", sync("debug").lock_key, {**sync("debug").payload(), "dir": str(work),
                                                         "name": "later"}, delay=600)
    queue.submit("test.flaky", sync("1.0").lock_key, {**sync("1.0").payload(), "dir": str(work), "name": "terminal",
                                                        "terminal": True})
    traceback = ("peer answered 500 to PUT /v2/team/app/manifests/latest\nTraceback (most recent call last):\n"
                 + "".join(f'  File "/opt/venvs/angos/lib/python3.11/site-packages/angos/replication/'
                           f'pipeline.py", line {100 + i}, in push_manifest_and_every_blob_it_needs\n'
                           for i in range(30))
                 + "RuntimeError: " + "a very long message without spaces " * 8)
    queue.submit("test.fail_with", sync("latest").lock_key, {**sync("latest").payload(), "error": traceback})
    # A loaded machine gets a minute for what the in-process drain does.
    wait_for(lambda: len(requests.get(main.url + "/_ext/_jobs/failed", params={"queue": "replication"},
                                      timeout=10).json()["failed"]) == 2, timeout=60, what="two failed jobs")
    wait_for(lambda: requests.head(peer.v2(f"{c.replicated}/manifests/v1"), timeout=10).status_code == 200,
             timeout=60, what="rep/app:v1 replicated to the peer")
    return c


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    reason = ui_browser.missing_browser()
    if reason:
        pytest.skip(reason)
    workdir = tmp_path_factory.mktemp("chromium")
    driver = ui_browser.start_chromium(workdir)
    driver.workdir = workdir
    print(f"browser artifacts (screenshots, chromedriver.log) in {workdir}")
    try:
        yield driver
    finally:
        ui_browser.stop_chromium(driver)
    assert ui_browser.selenium_manager_ran(workdir) is None


def _load(driver, url: str):
    """Load ``url``; fail on anything the page logged as an error in the console."""
    ui_browser.console_errors(driver)  # drop what an earlier page left
    driver.get(url)
    errors = ui_browser.console_errors(driver)
    assert not errors, f"console errors on {url}: {errors}"
    return driver


# -- the page contract, one check per page ----------------------------------------------------

def _all(driver, selector: str) -> list:
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, selector)


def _one(driver, selector: str):
    found = _all(driver, selector)
    assert found, f"no {selector} on {driver.current_url}"
    return found[0]


def _text(driver, selector: str) -> str:
    """The text of the first match, read in one step (the replication pages reload themselves
    every 5 seconds: an element found in one call may be gone by the next)."""
    text = driver.execute_script("const e = document.querySelector(arguments[0]); return e && e.textContent;",
                                 selector)
    assert text is not None, f"no {selector} on {driver.current_url}"
    return text


def _manifest_url(ns: str, digest: str) -> str:
    return f"/_ui/namespaces/{ns}/manifests/{digest}"


def check_home(d, c):
    groups = {g.get_attribute("data-repository") for g in _all(d, "section.group[data-repository]")}
    assert {"team", "rep", "hub", ""} <= groups, groups
    for repo, ns in (("team", c.ns), ("team", c.artifact_ns), ("rep", c.replicated), ("hub", c.cached_ns),
                     ("", c.unconfigured)):
        row = _one(d, f'section.group[data-repository="{repo}"] tr[data-namespace="{ns}"]')
        links = [a.get_attribute("href") for a in row.find_elements("css selector", "a")]
        assert any(urlparse(h).path == f"/_ui/namespaces/{ns}" for h in links), (ns, links)
    assert "unconfigured" in _text(d, 'section.group[data-repository=""]')
    _one(d, 'form[role="search"] input[type="search"][name="q"]')


def check_namespace(d, c):
    for tag in ("1.0", "latest", "debug"):
        _one(d, f'table#tags tr[data-tag="{tag}"]')
    row = _one(d, 'table#tags tr[data-tag="1.0"]')
    platforms = {b.get_attribute("textContent").strip()
                 for b in row.find_elements("css selector", "span.badge.platform")}
    assert {"linux/amd64", "linux/arm64"} <= platforms, platforms
    kinds = {b.get_attribute("data-artifact-type"): b.get_attribute("textContent").strip()
             for b in row.find_elements("css selector", "span.badge.referrer")}
    assert kinds.get(COSIGN) == COSIGN and kinds.get(SBOM) == SBOM, kinds
    children = row.find_element("css selector", "details.children")
    hrefs = [urlparse(a.get_attribute("href")).path for a in children.find_elements("css selector", "a[href]")]
    for child in c.children:
        assert _manifest_url(c.ns, child) in hrefs, (child, hrefs)
    copies = [b.get_attribute("data-copy") for b in row.find_elements("css selector", "button.copy[data-copy]")]
    assert any(c.index in v for v in copies), copies
    assert row.find_elements("css selector", "a.button.danger"), "no Delete on the tag row"
    # Referrers are badges on their subject, never rows of their own.
    for referrer in (c.signature, c.sbom):
        assert not _all(d, f'tr[data-digest="{referrer}"]'), referrer
    _one(d, f'table#untagged tr[data-digest="{c.untagged}"]')
    pull = _text(d, "code.pull")
    assert f"pull {c.main.host}/{c.ns}:" in pull, pull
    assert any("pull" in (b.get_attribute("data-copy") or "") for b in _all(d, "button.copy[data-copy]"))


def check_index(d, c):
    manifest = _text(d, "#manifest")
    assert c.index in manifest and "1.0" in manifest and "latest" in manifest, manifest
    referrers = _text(d, "#referrers")
    assert COSIGN in referrers and SBOM in referrers, referrers


def check_child(d, c):
    assert "linux/arm64" in _text(d, "#config")
    _one(d, "#layers tr.total")
    referenced = _one(d, "#referenced-by")
    hrefs = [urlparse(a.get_attribute("href")).path for a in referenced.find_elements("css selector", "a[href]")]
    assert _manifest_url(c.ns, c.index) in hrefs, hrefs
    assert "linux/arm64" in referenced.get_attribute("textContent")


def check_single(d, c):
    assert "linux/amd64" in _text(d, "#config")
    assert len(_all(d, "#layers tbody tr:not(.total)")) >= 3 or len(_all(d, "#layers tr")) >= 4
    _one(d, "#layers tr.total")


def check_artifact(d, c):
    files = _text(d, "#files")
    for name in c.files:
        assert name in files, files
    assert ARTIFACT in _text(d, "#manifest")


def check_replicated(d, c):
    assert "peer" in _text(d, "#replication")


def check_cached(d, c):
    assert c.peer.host in _text(d, "#cache")


def _job_links(d) -> set[str]:
    return {urlparse(a.get_attribute("href")).path for a in _all(d, "table a[href]")}


def _queue_counts(d) -> dict[str, str]:
    tabs = _all(d, 'nav.tabs [data-queue="replication"] a[data-list]')
    return {a.get_attribute("data-list"): a.find_element("css selector", ".count").text for a in tabs}


def check_jobs(d, c):
    table = _text(d, "table")
    assert "debug" in table, table
    assert f"/_ui/namespaces/{c.ns}" in _job_links(d)
    assert _queue_counts(d) == {"pending": "1", "failed": "2"}


def check_failed_jobs(d, c):
    assert len(_all(d, "tr[data-job]")) == 2
    (traceback,) = _all(d, "details.error")   # the multi-line error; the one-line one stays a line
    summary = traceback.find_element("css selector", "summary").get_attribute("textContent")
    assert summary.strip().endswith("peer answered 500 to PUT /v2/team/app/manifests/latest"), summary
    assert "refused for good" in _text(d, "table")
    assert f"/_ui/namespaces/{c.ns}" in _job_links(d)


def check_replication(d, c):
    assert "peer" in _text(d, "table")


def check_replication_namespace(d, c):
    table = _text(d, "table")
    assert "v1" in table and "peer" in table, table


def check_uploads(d, c):
    row = _one(d, f'table#uploads tr[data-upload="{c.upload}"]')
    forms = [urlparse(f.get_attribute("action")).path for f in row.find_elements("css selector", 'form[method="post"]')]
    assert f"/_ui/namespaces/{c.ns}/uploads/{c.upload}/cancel" in forms, forms


PAGES = {
    "home": (lambda c: "/_ui/", check_home),
    "namespace": (lambda c: f"/_ui/namespaces/{c.ns}", check_namespace),
    "manifest-index": (lambda c: _manifest_url(c.ns, c.index), check_index),
    "manifest-child": (lambda c: _manifest_url(c.ns, c.children[1]), check_child),
    "manifest-image": (lambda c: _manifest_url(c.ns, c.single), check_single),
    "manifest-artifact": (lambda c: _manifest_url(c.artifact_ns, c.artifact), check_artifact),
    "manifest-replicated": (lambda c: _manifest_url(c.replicated, c.replicated_digest), check_replicated),
    "manifest-cached": (lambda c: _manifest_url(c.cached_ns, c.cached), check_cached),
    "jobs": (lambda c: "/_ui/jobs?queue=replication", check_jobs),
    "failed-jobs": (lambda c: "/_ui/jobs/failed?queue=replication", check_failed_jobs),
    "replication": (lambda c: "/_ui/replication", check_replication),
    "replication-namespace": (lambda c: f"/_ui/replication/{c.replicated}", check_replication_namespace),
    "uploads": (lambda c: f"/_ui/namespaces/{c.ns}/uploads", check_uploads),
}


@pytest.mark.parametrize("name", list(PAGES))
def test_page_loads_cleanly_holds_its_elements_and_fits(site, browser, name):
    path, check = PAGES[name]
    url = site.main.url + path(site)
    _load(browser, url)
    browser.save_screenshot(str(browser.workdir / f"{name}.png"))   # before the checks: a failure has its picture
    check(browser, site)

    wide = ui_browser.overflow(browser)   # also opens every <details>: expanded rows must fit too
    assert wide["page"][0] <= wide["page"][1], f"{url} is wider than 1280 px: {wide}"
    assert not wide["tables"], f"tables wider than their container at 1280 px on {url}: {wide['tables']}"
    ui_browser.set_viewport(browser, 800, 900)
    try:
        narrow = ui_browser.overflow(browser)
        browser.save_screenshot(str(browser.workdir / f"{name}-800.png"))
        assert narrow["page"][0] <= narrow["page"][1], f"{url} scrolls sideways at 800 px: {narrow}"
    finally:
        ui_browser.set_viewport(browser, 1280, 900)
    assert not ui_browser.console_errors(browser), url


def test_every_link_on_every_page_leads_to_a_page(site, browser):
    """Each ``<a href>`` of every page above answers 200 (after redirects), and a link to a part
    of a page (``#fragment``) finds an element with that id there."""
    links: dict[str, str] = {}
    for name, (path, _) in PAGES.items():
        _load(browser, site.main.url + path(site))
        for a in _all(browser, "a[href]"):
            links.setdefault(a.get_attribute("href"), name)
    assert len(links) > 30, links
    broken = []
    for url, where in sorted(links.items()):
        assert url.startswith(site.main.url + "/"), f"a link on {where} leaves the registry: {url}"
        r = requests.get(url, timeout=10)
        fragment = urlparse(url).fragment
        if r.status_code != 200:
            broken.append((where, url, r.status_code))
        elif fragment and f'id="{fragment}"' not in r.text:
            broken.append((where, url, f"no element with id {fragment!r}"))
    assert not broken, broken


def test_every_page_is_readable_and_labelled(site, browser):
    """Every visible text on every page (details opened) against what is behind it: 4.5:1, 3:1
    for large text (WCAG 2 AA), in the light and the dark theme; every control and link has a name."""
    failures = {}
    for name, (path, _) in PAGES.items():
        _load(browser, site.main.url + path(site))
        unnamed = ui_browser.unlabelled_controls(browser)
        if unnamed:
            failures[f"{name}: no accessible name"] = unnamed
        browser.execute_script('document.querySelectorAll("details").forEach(d => { d.open = true; })')
        for theme in ("light", "dark"):
            browser.execute_script("document.documentElement.setAttribute('data-theme', arguments[0])", theme)
            found = ui_browser.contrast_failures(browser)
            if found:
                failures[f"{name} ({theme})"] = found
    assert not failures, failures


# -- behaviour ---------------------------------------------------------------------------------

def _html_state(d) -> tuple[str | None, str]:
    """``data-theme`` of ``<html>`` and its computed background colour."""
    return tuple(d.execute_script("return [document.documentElement.getAttribute('data-theme'),"
                            " getComputedStyle(document.documentElement).backgroundColor]"))


def _click(d, selector: str) -> None:
    _one(d, selector).click()


def test_theme_toggle_switches_in_place_and_is_remembered(site, browser):
    browser.delete_all_cookies()
    _load(browser, site.main.url + f"/_ui/namespaces/{site.ns}")
    theme, light = _html_state(browser)
    assert theme is None

    _click(browser, '[data-theme-choice="dark"]')
    theme, dark = _html_state(browser)
    assert theme == "dark" and dark != light, (theme, dark, light)
    browser.refresh()   # the server renders the remembered choice (cookie)
    assert _html_state(browser) == ("dark", dark)
    assert _one(browser, '[data-theme-choice="dark"]').get_attribute("aria-current") == "true"

    _click(browser, '[data-theme-choice="system"]')
    assert _html_state(browser) == (None, light)
    browser.refresh()
    assert _html_state(browser) == (None, light)

    # Without JavaScript the same links work: /_ui/theme sets the cookie and comes back here.
    here = browser.current_url
    browser.get(_one(browser, '[data-theme-choice="dark"]').get_attribute("href"))
    assert browser.current_url == here and _html_state(browser) == ("dark", dark)

    # "System" follows the system: a dark system gives the dark colours, "Light" overrides it.
    browser.execute_cdp_cmd("Emulation.setEmulatedMedia",
                            {"features": [{"name": "prefers-color-scheme", "value": "dark"}]})
    try:
        _click(browser, '[data-theme-choice="system"]')
        assert _html_state(browser) == (None, dark)
        _click(browser, '[data-theme-choice="light"]')
        assert _html_state(browser) == ("light", light)
    finally:
        browser.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": []})
        browser.delete_all_cookies()
    assert not ui_browser.console_errors(browser)


def test_the_keyboard_reaches_the_content_and_shows_where_it_is(site, browser):
    """The first Tab lands on "Skip to content", which then shows; the next focus is outlined."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    _load(browser, site.main.url + f"/_ui/namespaces/{site.ns}")
    ActionChains(browser).send_keys(Keys.TAB).perform()
    skip = browser.execute_script("const a = document.activeElement; const r = a.getBoundingClientRect();"
                                  " return [a.className, a.getAttribute('href'), r.left >= 0 && r.top >= 0];")
    assert skip == ["skip", "#main", True], skip
    ActionChains(browser).send_keys(Keys.TAB).perform()
    outline = browser.execute_script("const s = getComputedStyle(document.activeElement);"
                                     " return [document.activeElement.tagName, s.outlineStyle, s.outlineWidth];")
    assert outline[1] != "none" and outline[2] != "0px", outline


def test_a_tag_is_deleted_through_its_confirmation_page(site, browser):
    from selenium.common.exceptions import NoAlertPresentException

    ns = site.delete_ns
    page = f"/_ui/namespaces/{ns}"
    _load(browser, site.main.url + page)
    _one(browser, 'table#tags tr[data-tag="gone"] a.button.danger').click()
    assert urlparse(browser.current_url).path == f"{page}/tags/gone/delete"
    assert not ui_browser.console_errors(browser)
    button = _one(browser, 'form[method="post"] button.danger')
    assert button.text.strip() == "Delete tag"
    assert "gone" in _text(browser, "main")
    assert "gone" in requests.get(site.main.v2(f"{ns}/tags/list"), timeout=10).json()["tags"]

    button.click()
    try:   # ui.js may ask once more (a form with data-confirm); the page itself was the question
        browser.switch_to.alert.accept()
    except NoAlertPresentException:
        pass
    wait_for(lambda: urlparse(browser.current_url).path == page, timeout=10, what="back on the namespace page")
    _one(browser, 'p.notice[role="status"]')
    assert not _all(browser, 'tr[data-tag="gone"]')
    _one(browser, 'tr[data-tag="keep"]')
    assert "gone" not in requests.get(site.main.v2(f"{ns}/tags/list"), timeout=10).json()["tags"]
    assert not ui_browser.console_errors(browser)


def test_without_javascript_an_index_opens_the_theme_switches_and_a_tag_is_deleted(site, browser):
    """The same browser with scripts off: what ui.js does is only a shortcut."""
    browser.delete_all_cookies()
    browser.execute_cdp_cmd("Emulation.setScriptExecutionDisabled", {"value": True})
    try:
        _load(browser, site.main.url + f"/_ui/namespaces/{site.ns}")
        children = _one(browser, 'tr[data-tag="1.0"] details.children')
        assert children.get_attribute("open") is None
        children.find_element("css selector", "summary").click()
        assert children.get_attribute("open") is not None
        assert children.find_element("css selector", "span.badge.platform").is_displayed()

        # A plain link now: /_ui/theme sets the cookie and comes back with a new page (ui.js, had it
        # run, would have switched this one in place, and the mark would still be there).
        browser.execute_script("document.documentElement.setAttribute('data-mark', 'old page')")
        _click(browser, '[data-theme-choice="dark"]')
        wait_for(lambda: browser.execute_script("return document.documentElement.getAttribute('data-mark')") is None,
                 timeout=10, what="the page to be loaded again")
        assert urlparse(browser.current_url).path == f"/_ui/namespaces/{site.ns}"
        assert _html_state(browser)[0] == "dark"

        ns = site.delete_ns
        _load(browser, site.main.url + f"/_ui/namespaces/{ns}")
        _one(browser, 'table#tags tr[data-tag="gone-without-js"] a.button.danger').click()
        _one(browser, 'form[method="post"] button.danger').click()
        wait_for(lambda: urlparse(browser.current_url).path == f"/_ui/namespaces/{ns}", timeout=10,
                 what="back on the namespace page")
        _one(browser, 'p.notice[role="status"]')
        assert not _all(browser, 'tr[data-tag="gone-without-js"]')
        assert "gone-without-js" not in requests.get(site.main.v2(f"{ns}/tags/list"), timeout=10).json()["tags"]
    finally:
        browser.execute_cdp_cmd("Emulation.setScriptExecutionDisabled", {"value": False})
        browser.delete_all_cookies()


def test_screenshots_light_and_dark(site, browser):
    """The namespace page with the multi-arch index (expanded) and its referrer badges, at
    1280x900, in both themes: test artifacts, and the README's images when asked for."""
    update = os.environ.get("ANGOS_UPDATE_SCREENSHOTS") == "1"
    for theme in ("light", "dark"):
        browser.delete_all_cookies()
        _load(browser, site.main.url + f"/_ui/theme?set={theme}&back=/_ui/namespaces/{site.ns}")
        assert _html_state(browser)[0] == theme
        browser.execute_script('document.querySelectorAll(\'tr[data-tag="1.0"] details\').forEach(d => d.open = true)')
        shot = browser.workdir / f"ui-{theme}.png"
        browser.save_screenshot(str(shot))
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        print(f"screenshot: {shot}")
        if update:
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(shot, SCREENSHOTS / f"ui-{theme}.png")
            print(f"updated {SCREENSHOTS / f'ui-{theme}.png'}")
    browser.delete_all_cookies()


def test_selenium_manager_never_ran(browser):
    """Explicit driver and browser paths keep Selenium Manager (downloads, statistics) out; its
    stand-in records any start. (The fixture checks once more after the browser quits.)"""
    assert os.environ.get("SE_AVOID_STATS") == "true"
    assert ui_browser.selenium_manager_ran(browser.workdir) is None
