"""Playwright with Debian's chromium (never a downloaded browser), screenshots, and the vendored Chart.js."""

from __future__ import annotations

import os
import shutil
import subprocess
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
SHOTS = ROOT / "test-artifacts" / "screenshots"
DOCS_SHOTS = ROOT / "docs" / "screenshots"
CHART_JS = ROOT / "static" / "vendor" / "chart.umd.min.js"
AXE_JS = ROOT / "node_modules" / "axe-core" / "axe.min.js"
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
               "--disable-sync"]  # fmt: skip


@pytest.fixture(scope="session")
def chromium() -> Iterator[object]:
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    if not (CHART_JS.exists() and AXE_JS.exists()) and shutil.which("npm"):
        # Chart.js in static/vendor for the charts, axe-core in node_modules for the
        # accessibility checks (`make static` does this; CI too).
        subprocess.run([str(ROOT / "scripts" / "vendor_static.sh")], cwd=ROOT, check=True, timeout=300)
    # Playwright's sync API keeps an event loop running in this thread; Django then refuses
    # ORM calls here (setting up the test database, fixtures) unless told they are plain sync code.
    saved = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS)
            yield browser
            browser.close()
    finally:
        if saved is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = saved


@pytest.fixture
def new_context(chromium):
    """Browser contexts closed when the test ends, so no page keeps polling a server after it."""
    made: list = []

    def make(**kwargs):
        context = chromium.new_context(**kwargs)
        made.append(context)
        return context

    yield make
    for context in made:
        context.close()


class Shots:
    """Saves screenshots under test-artifacts/screenshots/; with UPDATE_DOCS_SCREENSHOTS=1 also copies
    the chosen ones to docs/screenshots/ for the user guide."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        SHOTS.mkdir(parents=True, exist_ok=True)

    def __call__(self, page, name: str, *, docs: bool = False, full_page: bool = True) -> Path:
        path = SHOTS / f"{self.prefix}-{name}.png"
        page.screenshot(path=str(path), full_page=full_page)
        # docs/screenshots/ is committed: refresh it on purpose only (UPDATE_DOCS_SCREENSHOTS=1),
        # so an ordinary test run leaves the working tree clean.
        if docs and os.environ.get("UPDATE_DOCS_SCREENSHOTS") == "1":
            DOCS_SHOTS.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, DOCS_SHOTS / f"{name}.png")
        return path


def watch_console(page, errors: list[str]) -> None:
    """Collect JavaScript errors and failed requests — Content-Security-Policy violations included; a product page
    has none."""
    page.on("pageerror", lambda exc: errors.append(f"pageerror: {exc}"))
    page.on(
        "console",
        lambda msg: (
            errors.append(f"console: {msg.text} ({msg.location.get('url', '')})") if msg.type == "error" else None
        ),
    )


def accessibility_violations(page) -> list[str]:
    """Run axe-core (WCAG 2 A and AA rules) on the page; return its serious and critical findings."""
    if not AXE_JS.exists():
        # Without npm there is no axe-core; the rest of the browser test still runs.
        warnings.warn(
            "axe-core is not installed (scripts/vendor_static.sh runs npm ci): accessibility not checked", stacklevel=2
        )
        return []
    if not page.evaluate("() => typeof window.axe !== 'undefined'"):
        # Evaluated through the DevTools protocol: an injected <script> tag would (rightly) break the page's CSP.
        page.evaluate(AXE_JS.read_text(encoding="utf-8"))
    result = page.evaluate(
        """async () => {
            const r = await axe.run(document, {runOnly: {type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21aa']}});
            return r.violations.filter(v => ['serious', 'critical'].includes(v.impact))
                .map(v => v.id + ': ' + v.help + ' — ' + v.nodes.slice(0, 3).map(n => n.target.join(' ')).join(', '));
        }"""
    )
    return [f"{page.url}: {v}" for v in result]
