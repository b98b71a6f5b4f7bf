"""Debian's headless Chromium driven by Selenium, for tests that use pages as people do.

No browser is downloaded: the driver is Debian's ``chromedriver`` and the browser
Debian's ``chromium`` (scripts/dev.sh installs both); Selenium Manager is kept offline.
Screenshots go to ``test-screenshots/`` (gitignored) or ``$PATCHWATCH_SCREENSHOT_DIR``,
and the run's summary names the folder. axe-core comes from npm into a cache folder
(scripts/dev.sh) or ``$PATCHWATCH_AXE_JS``, and is injected into the page under test.
"""

from __future__ import annotations

import base64
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.support.paths import ROOT
from tests.support.tools import require_or_skip

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
DESKTOP = (1280, 900)
PHONE = (390, 844)
SCREENSHOTS: list[Path] = []  # written this run; tests/conftest.py prints their folder
AXE_DEFAULT = (
    Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    / "patchwatch-test" / "axe-core" / "node_modules" / "axe-core" / "axe.min.js"
)  # fmt: skip


def screenshot_dir() -> Path:
    return Path(os.environ.get("PATCHWATCH_SCREENSHOT_DIR") or ROOT / "test-screenshots")


def axe_source() -> str:
    path = Path(os.environ.get("PATCHWATCH_AXE_JS") or AXE_DEFAULT)
    if not path.is_file():
        require_or_skip("PATCHWATCH_TEST_REQUIRE_ORACLES",
                        f"axe-core not installed at {path} (scripts/dev.sh setup)")  # fmt: skip
    return path.read_text()


@contextmanager
def chromium() -> Iterator[Any]:
    """A headless Chromium session with a fresh profile, closed afterwards."""
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        require_or_skip("PATCHWATCH_TEST_REQUIRE_ORACLES",
                        "chromium and chromium-driver are not installed")  # fmt: skip
    webdriver = pytest.importorskip("selenium.webdriver")
    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager: never fetch a driver or browser
    profile = tempfile.mkdtemp(prefix="pw-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", f"--user-data-dir={profile}",
                 f"--window-size={DESKTOP[0]},{DESKTOP[1]}"):  # fmt: skip
        options.add_argument(flag)
    service = webdriver.ChromeService(executable_path=CHROMEDRIVER)
    driver = webdriver.Chrome(options=options, service=service)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def screenshot(driver: Any, name: str) -> None:
    """The whole page at desktop and at phone width, as ``NAME-desktop.png`` and
    ``NAME-phone.png``."""
    folder = screenshot_dir()
    folder.mkdir(parents=True, exist_ok=True)
    for label, (width, height) in (("desktop", DESKTOP), ("phone", PHONE)):
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
            "width": width, "height": height, "deviceScaleFactor": 1,
            "mobile": label == "phone",
        })  # fmt: skip
        shot = driver.execute_cdp_cmd(
            "Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True}
        )
        path = folder / f"{name}-{label}.png"
        path.write_bytes(base64.b64decode(shot["data"]))
        SCREENSHOTS.append(path)
    driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


def axe_violations(driver: Any, source: str) -> list[dict[str, Any]]:
    """axe-core's serious and critical violations on the current page (WCAG 2.x A/AA
    and best practices)."""
    driver.execute_script(source)
    result = driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "axe.run(document, {resultTypes: ['violations']})"
        ".then(r => done(r.violations)).catch(e => done([{id: 'axe-error', impact: 'critical',"
        " help: String(e), nodes: []}]));"
    )
    return [v for v in result if v.get("impact") in ("serious", "critical")]


def describe(violations: list[dict[str, Any]]) -> str:
    return "; ".join(
        f"{v['id']}: {v.get('help')} ({', '.join(str(n.get('target')) for n in v['nodes'][:3])})"
        for v in violations
    )
