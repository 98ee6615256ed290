"""Debian's chromium, headless, driven through Selenium and Debian's chromium-driver.

One browser per test session. Nothing is downloaded: the browser and its
driver are the apt packages (``scripts/bootstrap.sh --test``), found on PATH,
and Selenium is pointed at that driver so it never fetches one. Missing
chromium skips locally and fails under CI, like the other servers.

``Page`` holds the checks every HTML maild writes must pass: no console
errors, every image loaded, nothing wider than the viewport, and a
screenshot kept as an artifact (``$MAILD_TEST_ARTIFACTS``, default
``test-artifacts/`` in the checkout).
"""
from __future__ import annotations

import base64
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.servers.common import unavailable

ARTIFACTS = Path(os.environ.get("MAILD_TEST_ARTIFACTS", Path(__file__).resolve().parents[2] / "test-artifacts"))

# every element whose box sticks out of the viewport, named for the failure message
_OVERFLOW_JS = """
const width = document.documentElement.clientWidth;
const out = [];
for (const el of document.querySelectorAll('body, body *')) {
  const r = el.getBoundingClientRect();
  if (r.width === 0 && r.height === 0) continue;
  if (r.right > width + 0.5 || r.left < -0.5) {
    out.push(el.tagName.toLowerCase() + (el.className ? '.' + el.className : '') + ' ' +
             Math.round(r.left) + '..' + Math.round(r.right));
  }
}
return {width: width, scrollWidth: document.documentElement.scrollWidth, wide: out.slice(0, 10)};
"""

_IMAGES_JS = """
return Array.from(document.images).map(i => ({src: i.src.slice(0, 60), alt: i.getAttribute('alt'),
  complete: i.complete, naturalWidth: i.naturalWidth}));
"""


@dataclass
class Browser:
    driver: Any

    def open(self, url: str, width: int, height: int = 900) -> None:
        self.driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
            "width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 600})
        self.driver.get(url)
        self.driver.execute_async_script(
            "const done = arguments[arguments.length - 1];"
            "if (document.readyState === 'complete') done(); else window.addEventListener('load', () => done());")

    def console_errors(self) -> list[str]:
        return [entry["message"] for entry in self.driver.get_log("browser") if entry["level"] == "SEVERE"]

    def images(self) -> list[dict[str, Any]]:
        return list(self.driver.execute_script(_IMAGES_JS))

    def overflow(self) -> dict[str, Any]:
        return dict(self.driver.execute_script(_OVERFLOW_JS))

    def screenshot(self, name: str) -> Path:
        """A full-page PNG under the artifacts folder; returns its path."""
        shot = self.driver.execute_cdp_cmd("Page.captureScreenshot",
                                           {"format": "png", "captureBeyondViewport": True})
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"{name}.png"
        path.write_bytes(base64.b64decode(shot["data"]))
        return path

    def check_page(self, url: str, name: str, widths: tuple[int, ...] = (800, 375),
                   expect_images: bool = True) -> list[Path]:
        """Load ``url`` at each width and assert the checks; the screenshots' paths."""
        shots = []
        self.driver.get_log("browser")  # drop what an earlier page left
        for width in widths:
            self.open(url, width)
            errors = self.console_errors()
            assert not errors, f"{name} at {width} px: console errors {errors}"
            images = self.images()
            assert bool(images) == expect_images, f"{name}: {len(images)} images on the page"
            broken = [i for i in images if not i["complete"] or i["naturalWidth"] <= 0]
            assert not broken, f"{name} at {width} px: images not loaded {broken}"
            assert all(i["alt"] for i in images), f"{name}: an image without alt text {images}"
            overflow = self.overflow()
            assert overflow["width"] == width, overflow
            assert not overflow["wide"] and overflow["scrollWidth"] <= width, \
                f"{name} at {width} px: wider than the viewport {overflow}"
            shots.append(self.screenshot(f"{name}-{width}px"))
        return shots


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    chromium = shutil.which("chromium")
    driver_path = shutil.which("chromedriver")
    if chromium is None or driver_path is None:
        unavailable("chromium", "the chromium and chromium-driver packages are not installed "
                                "(scripts/bootstrap.sh --test installs them)")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError as exc:
        unavailable("selenium", str(exc))
    options = webdriver.ChromeOptions()
    options.binary_location = str(chromium)
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--hide-scrollbars", "--allow-file-access-from-files", "--lang=en-US"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(driver_path)), options=options)
    driver.set_script_timeout(30)
    driver.set_page_load_timeout(60)
    try:
        yield Browser(driver)
    finally:
        driver.quit()
