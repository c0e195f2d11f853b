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
