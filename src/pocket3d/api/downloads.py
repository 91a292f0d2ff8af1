"""A stored artifact as an HTTP response, whatever the backend: a file sent from disk (local store), a redirect
to a presigned URL (S3 with ``downloads: redirect``), or the object streamed through this server (S3 with
``downloads: proxy``). All three honour ETag (the content hash); the first and last honour Range."""

from __future__ import annotations

import re
from urllib.parse import quote

from fastapi.responses import FileResponse, RedirectResponse, Response, StreamingResponse
from starlette.requests import Request

from pocket3d.errors import Pocket3DError
from pocket3d.storage import ArtifactStore, BlobMissing

_SINGLE_RANGE = re.compile(r"^bytes=\s*(\d*)-(\d*)\s*$")


def artifact_response(store: ArtifactStore, request: Request, *, sha256: str, size: int, media_type: str,
                      filename: str, headers: dict[str, str], missing: Pocket3DError,
                      redirect: bool = True) -> Response:
    """``headers`` go on every answer (ETag, Cache-Control); ``missing`` is raised when the blob is gone.
    ``redirect=False`` streams through this server even where the store hands out presigned URLs (for clients
    that do not follow a redirect)."""
    path = store.local_path(sha256)
    try:
        if path is not None:
            if not path.is_file():
                raise BlobMissing(sha256)
            return FileResponse(path, media_type=media_type, filename=filename, headers=headers)
        url = store.download_url(sha256, filename=filename, media_type=media_type) if redirect else None
        if url is not None:
            # the URL expires: a client must not keep the redirect
            return RedirectResponse(url, status_code=307, headers={**headers, "Cache-Control": "no-store"})
        return _proxied(store, request, sha256, size, media_type, filename, headers)
    except BlobMissing:
        raise missing from None


def _proxied(store: ArtifactStore, request: Request, sha256: str, size: int, media_type: str, filename: str,
             headers: dict[str, str]) -> Response:
    span = _range(request, size, headers.get("ETag"))
    start, end = span if span is not None else (0, None)
    body = store.open_range(sha256, start, end)
    last = size - 1 if end is None else end
    out = {**headers, "Accept-Ranges": "bytes", "Content-Length": str(max(0, last - start + 1)),
           "Content-Disposition": _disposition(filename)}
    if span is not None:
        out["Content-Range"] = f"bytes {start}-{last}/{size}"
    return StreamingResponse(body, status_code=206 if span is not None else 200, media_type=media_type,
                             headers=out)


def _range(request: Request, size: int, etag: str | None) -> tuple[int, int] | None:
    """One satisfiable byte range, as (first, last); None: send the whole object. Several ranges, or an
    If-Range that names another version, get the whole object too, as RFC 9110 allows."""
    value = request.headers.get("range")
    if value is None or size == 0:
        return None
    if_range = request.headers.get("if-range")
    if if_range is not None and if_range.strip() != etag:
        return None
    m = _SINGLE_RANGE.match(value)
    if m is None or not (m.group(1) or m.group(2)):
        return None
    if not m.group(1):  # the last N bytes
        return (max(0, size - int(m.group(2))), size - 1) if int(m.group(2)) else None
    first = int(m.group(1))
    last = min(int(m.group(2)), size - 1) if m.group(2) else size - 1
    return (first, last) if first <= last else None


def _disposition(filename: str) -> str:
    quoted = quote(filename)
    return f'attachment; filename="{filename}"' if quoted == filename else f"attachment; filename*=utf-8''{quoted}"
