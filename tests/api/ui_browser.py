"""A real browser for the UI tests: Debian's headless Chromium driven by Selenium, offline.

- :func:`missing_browser` names what is not installed (the test skips with that reason);
- :func:`start_chromium(workdir)` starts Chromium through ``/usr/bin/chromedriver`` and returns
  the WebDriver; :func:`stop_chromium` quits it;
- :func:`console_errors(driver)`: the SEVERE entries of the browser console since the last call;
- :func:`set_viewport(driver, width, height)`: the exact CSS viewport (not the window, whose
  frame differs between Chromium versions), so overflow numbers mean the same everywhere;
- :func:`overflow(driver)`: what sticks out horizontally (page, then each table against its parent).

Nothing here may reach the network (these machines must not, and CI must not depend on it):

- Selenium Manager, which downloads drivers and sends usage statistics, never runs: the driver
  and the browser are given as explicit paths, ``SE_AVOID_STATS=true`` is set, and
  ``SE_MANAGER_PATH`` points at a stand-in script that only records that it was started, so
  :func:`selenium_manager_ran` can prove it was not (the test asserts it);
- Chromium runs without its background services (updates, safe browsing, metrics, sync) and
  resolves no host name at all (``--host-resolver-rules``): the tests use 127.0.0.1 literally.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"

# Set before Selenium is imported or used: its Selenium Manager reads them when it would run.
os.environ["SE_AVOID_STATS"] = "true"

OFFLINE_FLAGS = (
    "--no-first-run", "--no-default-browser-check", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-default-apps", "--disable-extensions",
    "--disable-domain-reliability", "--disable-client-side-phishing-detection", "--no-pings",
    "--metrics-recording-only", "--disable-breakpad",
    "--disable-features=Translate,OptimizationHints,MediaRouter,AutofillServerCommunication",
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
)


def missing_browser() -> str | None:
    """Why the browser tests cannot run here (``make test`` installs both packages), else None."""
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not os.access(path, os.X_OK):
            return f"{path} is not installed (Debian package {package}; `make sysdeps` installs it)"
    return None


def _manager_stand_in(workdir: Path) -> Path:
    """A script in place of Selenium Manager: records that it ran and fails loudly."""
    marker = workdir / "selenium-manager-ran"
    script = workdir / "selenium-manager"
    script.write_text(f"#!/bin/sh\necho \"$@\" >> '{marker}'\n"
                      "echo 'Selenium Manager must not run in these tests' >&2\nexit 1\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script


def selenium_manager_ran(workdir: Path) -> str | None:
    """The arguments Selenium Manager was started with, if it ever was under ``workdir``'s stand-in."""
    marker = workdir / "selenium-manager-ran"
    return marker.read_text() if marker.exists() else None


def start_chromium(workdir: Path, width: int = 1280, height: int = 900):
    os.environ["SE_MANAGER_PATH"] = str(_manager_stand_in(workdir))
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    options.add_argument("--headless=new")
    if os.geteuid() == 0:
        options.add_argument("--no-sandbox")  # Chromium refuses to start its sandbox as root
    options.add_argument("--disable-dev-shm-usage")  # small /dev/shm in containers
    options.add_argument(f"--window-size={width},{height}")
    options.add_argument(f"--user-data-dir={workdir / 'profile'}")
    for flag in OFFLINE_FLAGS:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(executable_path=CHROMEDRIVER, log_output=str(workdir / "chromedriver.log"))
    driver = webdriver.Chrome(service=service, options=options)
    driver.set_page_load_timeout(30)
    set_viewport(driver, width, height)
    return driver


def stop_chromium(driver) -> None:
    driver.quit()


def set_viewport(driver, width: int, height: int) -> None:
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})


def console_errors(driver) -> list[str]:
    """The console's SEVERE messages (script errors, failed loads) since the last call."""
    return [f"{e['level']}: {e['message']}" for e in driver.get_log("browser") if e["level"] == "SEVERE"]


OVERFLOW_JS = """
const de = document.documentElement;
const out = {page: [de.scrollWidth, de.clientWidth], tables: []};
document.querySelectorAll("details").forEach(d => { d.open = true; });
document.querySelectorAll("table").forEach((t, i) => {
  const parent = t.parentElement;
  if (t.scrollWidth > parent.clientWidth || t.getBoundingClientRect().right > de.clientWidth + 0.5) {
    out.tables.push({table: t.id || ("table " + i), scrollWidth: t.scrollWidth,
                     parentClientWidth: parent.clientWidth, right: t.getBoundingClientRect().right,
                     viewport: de.clientWidth});
  }
});
out.page = [de.scrollWidth, de.clientWidth];
return out;
"""


def overflow(driver) -> dict:
    """``{"page": [scrollWidth, clientWidth], "tables": [what overflows]}`` with every
    ``<details>`` opened first (an expanded index or error must fit too)."""
    return driver.execute_script(OVERFLOW_JS)


CONTRAST_JS = """
function rgba(text) {
  const m = text.match(/rgba?\\(([^)]+)\\)/);
  if (!m) return null;
  const p = m[1].split(/[\\s,\\/]+/).filter(Boolean).map(Number);
  return [p[0], p[1], p[2], p.length > 3 ? p[3] : 1];
}
function over(top, under) {
  return [0, 1, 2].map(i => top[i] * top[3] + under[i] * (1 - top[3]));
}
function background(el) {
  const layers = [];
  for (let e = el; e; e = e.parentElement) {
    const c = rgba(getComputedStyle(e).backgroundColor);
    if (c && c[3] > 0) { layers.push(c); if (c[3] >= 1) break; }
  }
  let out = [255, 255, 255];
  for (const c of layers.reverse()) out = over(c, out);
  return out;
}
function luminance(c) {
  const f = v => { v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); };
  return 0.2126 * f(c[0]) + 0.7152 * f(c[1]) + 0.0722 * f(c[2]);
}
const seen = new Set(), failures = [];
for (const el of document.body.querySelectorAll("*")) {
  const own = Array.from(el.childNodes).some(n => n.nodeType === 3 && n.textContent.trim());
  if (!own || !el.getClientRects().length || el.closest("[hidden], .skip")) continue;
  const style = getComputedStyle(el);
  if (style.visibility === "hidden" || el.disabled) continue;
  const bg = background(el);
  const fg = over(rgba(style.color), bg);
  const [hi, lo] = [luminance(fg), luminance(bg)].sort((a, b) => b - a);
  const ratio = (hi + 0.05) / (lo + 0.05);
  const size = parseFloat(style.fontSize), bold = parseInt(style.fontWeight, 10) >= 700;
  const needed = (size >= 24 || (size >= 18.66 && bold)) ? 3 : 4.5;
  const classes = typeof el.className === "string" ? el.className.trim().split(/\\s+/).filter(Boolean) : [];
  const what = [el.tagName.toLowerCase(), ...classes].join(".");
  if (ratio < needed && !seen.has(what)) {
    seen.add(what);
    failures.push({element: what, text: el.textContent.trim().slice(0, 40), ratio: Math.round(ratio * 100) / 100,
                   needed: needed, color: style.color, background: "rgb(" + bg.map(Math.round).join(", ") + ")"});
  }
}
return failures;
"""


def contrast_failures(driver) -> list[dict]:
    """Visible text whose contrast with what is behind it is below WCAG AA (4.5:1, 3:1 for large
    text), one entry per kind of element."""
    return driver.execute_script(CONTRAST_JS)


UNLABELLED_JS = """
const out = [];
for (const el of document.querySelectorAll("input:not([type=hidden]), select, textarea, button, a[href]")) {
  const name = (el.getAttribute("aria-label") || el.getAttribute("title") || "").trim()
    || (el.labels && Array.from(el.labels).map(l => l.textContent).join("").trim())
    || (el.getAttribute("aria-labelledby") || "").split(/\\s+/)
         .map(id => (document.getElementById(id) || {}).textContent || "").join("").trim()
    || (el.tagName !== "INPUT" ? el.textContent.trim() : "")
    || ((el.type === "submit" || el.type === "button") ? (el.value || "").trim() : "");
  if (!name) out.push(el.outerHTML.slice(0, 120));
}
return out;
"""


def unlabelled_controls(driver) -> list[str]:
    """Form controls, buttons and links with no accessible name (label, aria-label, title or text)."""
    return driver.execute_script(UNLABELLED_JS)
