"""Open an HTML file in Debian's headless Chromium (through Playwright, never its own browser
download) and report what a user would see: console errors, page errors, dialogs, images."""
import os
import shutil
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]


def need_chromium():
    """Skip without Chromium on a developer machine; in CI its absence is a failure."""
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("CI needs Debian's chromium (scripts/test.sh installs it)")
        pytest.skip("chromium not installed (apt-get install chromium)")


def open_page(path: Path, screenshot: Path | None = None) -> dict:
    from playwright.sync_api import sync_playwright

    need_chromium()
    seen = {"console_errors": [], "page_errors": [], "dialogs": [], "requests": []}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.on("console", lambda m: m.type == "error" and seen["console_errors"].append(m.text))
        page.on("pageerror", lambda e: seen["page_errors"].append(str(e)))
        page.on("dialog", lambda d: (seen["dialogs"].append(d.message), d.dismiss()))
        page.on("request", lambda r: not r.url.startswith(("file:", "data:", "blob:")) and seen["requests"].append(r.url))
        page.goto(path.resolve().as_uri(), wait_until="load")
        page.wait_for_timeout(500)
        seen["images"] = page.evaluate(
            "Array.from(document.images).map(i => ({ok: i.complete && i.naturalWidth > 0, alt: i.alt}))")
        seen["text"] = page.inner_text("body")
        seen["injected_img"] = page.evaluate("document.querySelectorAll('img[src=\"x\"]').length")
        seen["plots"] = page.evaluate("document.querySelectorAll('.plot3d .plot-container').length")
        if screenshot:
            page.screenshot(path=str(screenshot), full_page=True)
        browser.close()
    return seen
