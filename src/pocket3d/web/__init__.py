"""The web app: a page at ``/`` and its modules, styles and vendored three.js under ``/app/``.

Static files only: the app talks to the server through the HTTP API like any other client, so this package imports
nothing of pocket3d's. three.js comes from npm at set-up (``scripts/ensure-web-vendor.sh``, pinned by
``tools/web-vendor/package-lock.json``) into ``static/app/vendor/``, which is not committed but goes into the wheel.

The page is sent with a Content-Security-Policy that lets it load and connect to its own origin only; the one
inline script, the import map, is allowed by its hash. blob: and data: are allowed where the 3D viewer needs them
(GLTFLoader hands a GLB's embedded textures over as blob: URLs; thumbnails of dropped files are blob: URLs).
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Sequence
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import HTMLResponse, PlainTextResponse, Response
from fastapi.staticfiles import StaticFiles

STATIC = Path(__file__).resolve().parent / "static"
INDEX = STATIC / "index.html"
VENDOR_MARKER = STATIC / "app" / "vendor" / "three" / "build" / "three.module.js"
_IMPORT_MAP = re.compile(r'<script type="importmap">(.*?)</script>', re.DOTALL)

# Headers on every file of the app; the policy itself only on the page.
COMMON_HEADERS = {"X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}


def content_security_policy(page: str, connect: Sequence[str] = ()) -> str:
    """``connect``: other origins the page may fetch from (where downloads are redirected: an S3 store)."""
    scripts = ["'self'"]
    if (found := _IMPORT_MAP.search(page)) is not None:
        digest = base64.b64encode(hashlib.sha256(found.group(1).encode()).digest()).decode()
        scripts.append(f"'sha256-{digest}'")
    return "; ".join([
        "default-src 'self'",
        f"script-src {' '.join(scripts)}",
        "style-src 'self'",
        "img-src 'self' blob: data:",
        " ".join(["connect-src 'self' blob: data:", *connect]),
        "worker-src 'self' blob:",
        "font-src 'self'",
        "object-src 'none'",
        "base-uri 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ])


class _AppFiles(StaticFiles):
    def file_response(self, *args, **kwargs) -> Response:  # noqa: ANN002, ANN003 - StaticFiles' own signature
        response = super().file_response(*args, **kwargs)
        response.headers.update(COMMON_HEADERS)
        return response


def vendored() -> bool:
    return VENDOR_MARKER.is_file()


def install(app: FastAPI, path: str = "/", *, connect: Sequence[str] = ()) -> None:
    """Serve the page at ``path`` and its files under ``/app``; ``connect``: origins besides the server's that the
    page may fetch from (see ``content_security_policy``)."""

    @app.api_route(path, methods=["GET", "HEAD"], include_in_schema=False)
    async def web_app() -> Response:
        if not vendored():
            return PlainTextResponse(
                "pocket3d's web app is missing its browser libraries (three.js): run `make web` (it runs "
                "scripts/ensure-web-vendor.sh) in the checkout, or install pocket3d from a wheel built after it. "
                "The API and its docs (/docs) work without them.", status_code=503, headers=COMMON_HEADERS)
        page = INDEX.read_text()
        return HTMLResponse(page, headers={**COMMON_HEADERS, "Content-Security-Policy": content_security_policy(page, connect),
                                           "Cache-Control": "no-cache"})

    app.mount("/app", _AppFiles(directory=STATIC / "app", check_dir=False), name="web-app")
