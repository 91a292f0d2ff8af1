"""Request ids and body limits, as pure ASGI middleware (no per-request task, unlike BaseHTTPMiddleware)."""

from __future__ import annotations

import contextvars
import logging
import re
import random

from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)
_request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
_VALID_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def current_request_id() -> str:
    return _request_id.get()


class RequestIdLogFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = _request_id.get()
        return True


class RequestIdMiddleware:
    """Takes ``X-Request-ID`` from the client when it is sane, else makes one; returns it on every answer."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"x-request-id"), "")
        # Not a secret, only unique: random.getrandbits avoids a getrandom() syscall per request.
        rid = given if _VALID_ID.match(given) else f"{random.getrandbits(128):032x}"
        token = _request_id.set(rid)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = list(message["headers"]) + [(b"x-request-id", rid.encode())]
            await send(message)

        started = False

        async def send_tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send_with_id(message)

        try:
            await self.app(scope, receive, send_tracked)
        except ClientDisconnect:
            log.info("client went away before the request was read")
        except Exception:
            # Answered here rather than by the app's outermost handler, which runs after the id is gone.
            log.exception("unhandled error on %s %s", scope.get("method"), scope.get("path"))
            if not started:
                from pocket3d.api.errors import error_response  # errors imports this module

                await error_response(500, "INTERNAL_ERROR", "internal error; quote the request_id when "
                                     "reporting it")(scope, receive, send_with_id)
        finally:
            _request_id.reset(token)


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
    ``exempt`` (uploads) enforce a larger limit of their own while streaming to disk.
    """

    def __init__(self, app: ASGIApp, limit: int, exempt: tuple[str, ...] = ()):
        self.app, self.limit, self.exempt = app, limit, exempt

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.exempt:
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
