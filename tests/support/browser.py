"""Headless Chromium for the browser tests: Debian's ``chromium`` package (scripts/ensure-chromium.sh installs it;
Playwright's own browser download is not used), driven by Playwright for Python."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

# Quiet and self-contained: no sandbox (containers, root), no GPU, nothing fetched in the background.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]


def chromium_path() -> str | None:
    """``POCKET3D_CHROMIUM``, else the distribution's chromium on PATH."""
    return os.environ.get("POCKET3D_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


@contextmanager
def launch_chromium() -> Iterator:
    """A Playwright ``Browser`` on the system's Chromium; skips (fails on CI) when there is none."""
    path = chromium_path()
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing: scripts/ensure-chromium.sh installs it")
        pytest.skip("chromium is missing (scripts/ensure-chromium.sh installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=path, headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()
