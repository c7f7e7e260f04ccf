"""The browser tier: the web page at `/` driven by Playwright in Debian's Chromium, against the real service
(Ray Serve on CPU, the tiny profile, HTTP on 127.0.0.1; `tests/serve/harness.py` starts it).

Every test here is marked `browser`. Nothing is skipped silently: without Playwright or Chromium the tier
fails under CI (`CI` set; `.ci/run` installs both) and is skipped elsewhere with the reason and the fix.
Playwright's own browser downloads are never used: the browser is `CHROMIUM` (Debian's `chromium`).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

import pytest

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE.parent / "serve"))  # the serve tier's harness: one Ray with the app, HTTP helpers
CHROMIUM = "/usr/bin/chromium"  # Debian's package


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(item.fspath).parents:
            item.add_marker(pytest.mark.browser)


def missing(what: str, fix: str) -> NoReturn:
    """Fail under CI, skip elsewhere: either way the reason and the fix are printed."""
    message = f"the browser tier needs {what}: {fix}"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's Chromium, headless, through Playwright's sync API."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing("Playwright", "tools/setup-venv.sh installs it (pip install playwright)")
    if not os.access(CHROMIUM, os.X_OK):
        missing(f"Chromium at {CHROMIUM}", "apt-get install chromium (.ci/run does)")
    with sync_playwright() as playwright:
        # --no-sandbox: tests run as root here and in CI, where Chromium's sandbox refuses to start;
        # --disable-dev-shm-usage: a container's small /dev/shm would crash its renderer
        args = ["--no-sandbox", "--disable-dev-shm-usage"]
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=args)
        try:
            yield chromium
        finally:
            chromium.close()
