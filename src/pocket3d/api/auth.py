"""Authentication from the headers, before anything reads the body.

FastAPI reads and parses a request's body before it resolves the route's dependencies, so a key checked in a
dependency is checked after a 90 MB body was read (and a malformed one answered 400, not 401). With auth on, this
ASGI middleware checks the key of every request to ``/api/`` that carries a body, or a key, from the headers
alone: without a valid one the answer is 401 and the body is never read. Bodiless requests without a key go on,
so the public routes (health, readiness) stay public and the others answer 401 from ``get_principal``. The
principal found rides in ``scope["state"]`` for ``get_principal``. It is independent of the request-id middleware
around it.
"""

from __future__ import annotations

from collections.abc import Iterable

from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Receive, Scope, Send

from pocket3d.api.errors import error_response
from pocket3d.api.keys import STATE_KEY, Principal, authenticate
from pocket3d.errors import ErrorCode
from pocket3d.jobs.store import Store

KEY_HINT = "the server's operator makes keys with `pocket3d keys create --name NAME`"


def token_from(headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    """The key from ``X-API-Key``, else from ``Authorization: Bearer``."""
    found = dict(headers)
    if b"x-api-key" in found:
        return found[b"x-api-key"].decode("latin-1").strip() or None
    scheme, _, value = found.get(b"authorization", b"").decode("latin-1").partition(" ")
    return (value.strip() or None) if scheme.lower() == "bearer" else None


class AuthMiddleware:
    """With auth on, answers 401 from the headers to a request for ``prefix`` that carries a body or a key
    without a valid key."""

    def __init__(self, app: ASGIApp, *, store: Store, enabled: bool, prefix: str = "/api/"):
        self.app, self.store, self.enabled, self.prefix = app, store, enabled, prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.enabled or not scope["path"].startswith(self.prefix):
            await self.app(scope, receive, send)
            return
        headers = scope["headers"]
        token = token_from(headers)
        if token is None and not _has_body(headers):
            await self.app(scope, receive, send)  # the route decides: public, or 401 from get_principal
            return
        principal: Principal | None = None
        if token:
            principal = await run_in_threadpool(authenticate, self.store, token)
        if principal is None:
            message = ("an API key is required: 'Authorization: Bearer <key>' or 'X-API-Key: <key>'" if not token
                       else "the API key is not valid or was revoked")
            # Connection: close, so the body the client may still be sending is dropped, not read.
            response = error_response(401, ErrorCode.UNAUTHORIZED, message, hint=KEY_HINT,
                                      headers={"WWW-Authenticate": "Bearer", "Connection": "close"})
            await response(scope, receive, send)
            return
        scope.setdefault("state", {})[STATE_KEY] = principal
        await self.app(scope, receive, send)


def _has_body(headers: Iterable[tuple[bytes, bytes]]) -> bool:
    for name, value in headers:
        if name == b"transfer-encoding" or (name == b"content-length" and value.strip() not in (b"", b"0")):
            return True
    return False
