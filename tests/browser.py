"""Open a local HTML file in Debian's headless Chromium and report what a user would meet.

Playwright drives the system browser (``/usr/bin/chromium``, apt package ``chromium``); it never
downloads one of its own (no ``playwright install``). Each call starts a fresh profile in a
temporary folder, so nothing carries over between tests.

    seen = open_page(path, evaluate={"plots": "document.querySelectorAll('.plot-container').length"})
    assert seen["console_errors"] == [] and seen["plots"] == 2

Without Chromium (or Playwright) a test skips on a developer machine and fails under CI=true.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# headless=True in open_page adds --headless; a fresh --user-data-dir comes from the temporary profile.
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         # WebGL without a GPU (plotly's 3-D scatter): Chromium's software renderer, off unless asked for
         "--use-angle=swiftshader", "--enable-unsafe-swiftshader"]
LOCAL = ("file:", "data:", "blob:", "about:")
# Settled: every <img> decoded (or failed) and the fonts ready; plotly draws synchronously after that.
SETTLED = "Array.from(document.images).every(i => i.complete) && document.fonts.status === 'loaded'"
IMAGES = ("Array.from(document.images).map(i => "
          "({ok: i.complete && i.naturalWidth > 0, alt: i.alt, src: i.src.slice(0, 40)}))")


def need_chromium() -> None:
    """Skip when Chromium or Playwright is missing; under CI=true that is a failure instead."""
    missing = []
    if CHROMIUM is None:
        missing.append("Chromium (apt-get install chromium)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing.append("Playwright (pip install playwright; never `playwright install`)")
    if missing:
        reason = "browser test needs " + " and ".join(missing)
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"{reason}: CI must have it (scripts/test.sh installs both)")
        pytest.skip(reason)


def open_page(path: Path, *, evaluate: dict[str, str] | None = None, screenshot: Path | None = None,
              full_page: bool = True, viewport: tuple[int, int] = (1280, 900), settle_ms: int = 300) -> dict:
    """Load path via file://, wait until it settles, and return what happened.

    The result holds ``console_errors``, ``page_errors`` (uncaught exceptions), ``dialogs`` (alert,
    confirm, prompt: each dismissed), ``requests`` (anything not file:/data:/blob:), ``failed``
    (requests that failed), ``images`` ({ok, alt, src} per <img>), ``text`` (document.body.innerText),
    and one entry per ``evaluate`` name: the value of that JavaScript expression.
    """
    from playwright.sync_api import sync_playwright

    need_chromium()
    seen = {"console_errors": [], "page_errors": [], "dialogs": [], "requests": [], "failed": []}
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile, sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            profile, executable_path=CHROMIUM, headless=True, args=FLAGS,
            viewport={"width": viewport[0], "height": viewport[1]})
        try:
            page = context.new_page()
            page.on("console", lambda m: m.type == "error" and seen["console_errors"].append(m.text))
            page.on("pageerror", lambda e: seen["page_errors"].append(str(e)))
            page.on("dialog", lambda d: (seen["dialogs"].append(f"{d.type}: {d.message}"), d.dismiss()))
            page.on("request", lambda r: r.url.startswith(LOCAL) or seen["requests"].append(r.url))
            page.on("requestfailed", lambda r: seen["failed"].append(r.url[:80]))
            page.goto(Path(path).resolve().as_uri(), wait_until="load")
            page.wait_for_function(SETTLED, timeout=30_000)
            page.wait_for_timeout(settle_ms)
            seen["images"] = page.evaluate(IMAGES)
            seen["text"] = page.evaluate("document.body.innerText")
            for name, expression in (evaluate or {}).items():
                seen[name] = page.evaluate(expression)
            if screenshot is not None:
                page.screenshot(path=str(screenshot), full_page=full_page)
        finally:
            context.close()
    return seen
