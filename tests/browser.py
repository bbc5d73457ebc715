"""Headless Chromium for the end-to-end tests: Debian's chromium driven by the PyPI playwright wheel.

Playwright's own browser download is not reachable here, so the tests launch the system browser;
the flags keep it from opening background connections the closed network would refuse.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = [
    "--no-sandbox",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
]


@contextmanager
def chromium() -> Iterator[Any]:
    """A launched headless browser, or a skip naming what to install."""
    if not CHROMIUM.exists():
        pytest.skip(
            "Debian's chromium is not installed (apt-get install -y chromium; scripts/ensure_system_packages.sh does it as root)"
        )
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("the Python package playwright is not installed (pip install -r requirements.txt)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=FLAGS)
        try:
            yield browser
        finally:
            browser.close()
