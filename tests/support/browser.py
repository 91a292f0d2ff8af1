"""Headless Chromium for the browser tests: Debian's ``chromium`` package (scripts/ensure-chromium.sh installs it;
Playwright's own browser download is not used), driven by Playwright for Python. WebGL runs on SwiftShader, the
CPU renderer Chromium carries, so the web app's 3D viewer draws without a GPU."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit

import pytest

# Quiet and self-contained: no sandbox (containers, root), WebGL on SwiftShader, nothing fetched in the background
# (on a closed network Chromium's own update and sync calls only flood refusals), and no host name resolves but
# localhost and 127.0.0.1, so nothing a page asks for can leave the machine.
CHROMIUM_ARGS = ["--no-sandbox", "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
                 "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1"]


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


class PageGuard:
    """What a page did that it must not: a request to any origin but ``allowed_origin``'s, and console errors or
    uncaught exceptions. ``check()`` fails the test with them. (It listens rather than intercepts: Playwright's
    interception turns the browser's cache off, and every page would compile its scripts anew.)"""

    def __init__(self, page, allowed_origin: str):  # noqa: ANN001 - a Playwright Page
        self.allowed = _origin(allowed_origin)
        self.foreign: list[str] = []
        self.errors: list[str] = []
        page.on("request", self._request)
        page.on("console", lambda msg: self.errors.append(f"console.{msg.type}: {msg.text}")
                if msg.type == "error" else None)
        page.on("pageerror", lambda exc: self.errors.append(f"uncaught: {exc}"))

    def _request(self, request) -> None:  # noqa: ANN001 - a Playwright Request
        url = request.url
        if not url.startswith(("blob:", "data:")) and _origin(url) != self.allowed:
            self.foreign.append(url)

    def check(self) -> None:
        assert not self.foreign, f"requests to hosts other than the server: {self.foreign}"
        assert not self.errors, f"console errors: {self.errors}"


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme, parts.netloc
