"""The access line, the 500 answer and body limits, as pure ASGI middleware (no per-request task, unlike
BaseHTTPMiddleware). The request id itself is asgi-correlation-id's (``X-Request-ID``, taken from the client when
it is sane, else made; returned on every answer)."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterable

from asgi_correlation_id import correlation_id
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.routing import compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pocket3d.api.keys import STATE_KEY

log = logging.getLogger(__name__)
access_log = logging.getLogger("pocket3d.access")
_VALID_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
CLIENT_GONE = 499  # the status an access line gives a request whose client left first (nginx's convention)


def current_request_id() -> str:
    return correlation_id.get() or "-"


def valid_request_id(value: str) -> bool:
    """A client's X-Request-ID is kept when it is short and plain; otherwise the request gets a fresh one."""
    return bool(_VALID_ID.match(value))


class RouteTemplates:
    """The templates of the app's documented paths, for a request that no route saw because a middleware answered
    first (api.auth's 401). Compiled on first use: the OpenAPI document is built once, lazily."""

    def __init__(self, paths: Callable[[], Iterable[str]]):
        self._paths = paths
        self._compiled: list[tuple[re.Pattern[str], str]] | None = None

    def match(self, path: str) -> str | None:
        if self._compiled is None:
            self._compiled = [(compile_path(p)[0], p) for p in self._paths()]
        return next((template for regex, template in self._compiled if regex.match(path)), None)


def route_template(scope: Scope, templates: RouteTemplates | None = None) -> str:
    """``/api/v1/jobs/{job_id}`` rather than the path itself, so metrics and logs group by route; "unmatched"
    when no route takes the path (a scan of made-up paths must not make a label each)."""
    template = getattr(scope.get("route"), "path_format", None)
    if not template:
        found = templates.match(scope.get("path", "")) if templates is not None else None
        return found or "unmatched"
    # FastAPI keeps an included router's routes with their own path (no prefix); the prefix is what the request
    # path holds before as many segments as the template has.
    segments = scope.get("path", "").split("/")
    depth = template.count("/")
    return "/".join(segments[:max(1, len(segments) - depth)]) + template if len(segments) > depth else template


class AccessLogMiddleware:
    """One access line per HTTP request (method, route template, status, seconds, key id: never the key) and its
    duration for the metrics; an unhandled error becomes the 500 error body here, while the request id is known
    (the app's outermost handler runs after the id is gone)."""

    def __init__(self, app: ASGIApp, observe: Callable[[str, str, int, float], None] | None = None,
                 templates: RouteTemplates | None = None, log_access: bool = True):
        self.app, self.observe, self.templates, self.log_access = app, observe, templates, log_access

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started_at = time.perf_counter()
        status = 500
        started = False

        async def send_tracked(message: Message) -> None:
            nonlocal started, status
            if message["type"] == "http.response.start":
                started, status = True, message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_tracked)
        except ClientDisconnect:
            status = CLIENT_GONE
            log.info("client went away before the request was read")
        except Exception:
            log.exception("unhandled error on %s %s", scope.get("method"), scope.get("path"))
            if not started:
                from pocket3d.api.errors import error_response  # errors imports this module

                await error_response(500, "INTERNAL_ERROR", "internal error; quote the request_id when "
                                     "reporting it")(scope, receive, send_tracked)
        finally:
            seconds = time.perf_counter() - started_at
            method, route = scope.get("method", "?"), route_template(scope, self.templates)
            state = scope.get("state") or {}
            # The principal api.auth found before the body was read; else what get_principal noted.
            key_id = getattr(state.get(STATE_KEY), "key_id", None) or state.get("key_id")
            if self.log_access:
                access_log.info("%s %s %d %.3fs key=%s", method, route, status, seconds, key_id or "-",
                                extra={"method": method, "route": route, "status": status,
                                       "seconds": round(seconds, 6), "key_id": key_id})
            if self.observe is not None:
                self.observe(method, route, status, seconds)


TOO_LARGE_HINT = ("send large inputs as files: upload each with POST /api/v1/files (multipart, a larger limit) and "
                  "pass its file_id instead of a data: URI")


class BodyTooLarge(HTTPException):
    """Raised from ``receive`` when a streamed body passes the limit; an HTTPException so FastAPI's body parsing
    passes it on to the error handlers instead of calling it a parse error."""

    def __init__(self, limit: int):
        super().__init__(413, f"the request body is larger than {limit} bytes")
        self.limit = limit


class BodyLimitMiddleware:
    """Refuses request bodies over ``limit`` bytes, by Content-Length up front or while they stream in.

    Starlette's own limiter answers in plain text; this one goes through the API's error format. Paths in
    ``exempt`` and under ``exempt_prefixes`` (uploads) enforce a larger limit of their own while streaming to disk.
    """

    def __init__(self, app: ASGIApp, limit: int, exempt: tuple[str, ...] = (), exempt_prefixes: tuple[str, ...] = ()):
        self.app, self.limit, self.exempt, self.exempt_prefixes = app, limit, exempt, exempt_prefixes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.exempt or scope["path"].startswith(self.exempt_prefixes):
            await self.app(scope, receive, send)
            return
        length = next((v for k, v in scope["headers"] if k == b"content-length"), b"")
        if length.isdigit() and int(length) > self.limit:
            from pocket3d.api.errors import error_response  # errors imports this module

            response = error_response(413, "REQUEST_TOO_LARGE", BodyTooLarge(self.limit).detail,
                                      {"limit": self.limit}, headers={"Connection": "close"}, hint=TOO_LARGE_HINT)
            await response(scope, receive, send)
            return
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise BodyTooLarge(self.limit)
            return message

        await self.app(scope, limited, send)
