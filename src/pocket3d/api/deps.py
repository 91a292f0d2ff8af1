"""FastAPI dependencies: the node, settings and the calling principal.

They are ``async def`` on purpose: a plain ``def`` dependency costs a threadpool round trip per request.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader, HTTPBearer
from starlette.concurrency import run_in_threadpool

from pocket3d.api import auth
from pocket3d.api.keys import LOCAL_PRINCIPAL, STATE_KEY, Principal, authenticate
from pocket3d.config import Settings
from pocket3d.errors import ErrorCode, Pocket3DError
from pocket3d.node import Node


KEY_HINT = auth.KEY_HINT


async def get_node(request: Request) -> Node:
    return request.app.state.node


async def get_settings(request: Request) -> Settings:
    return request.app.state.node.settings


# Declared as security dependencies so the API's docs show the key schemes (and an Authorize button) on the
# routes that take a principal; get_principal reads the headers itself, so they never refuse anything.
BEARER = HTTPBearer(auto_error=False, scheme_name="bearerAuth",
                    description="an API key from `pocket3d keys create` (when the server has auth on)")
API_KEY = APIKeyHeader(name="X-API-Key", auto_error=False, scheme_name="apiKeyHeader",
                       description="the same key, in a header of its own")


async def get_principal(request: Request, _bearer: Annotated[object, Security(BEARER)] = None,
                        _api_key: Annotated[object, Security(API_KEY)] = None) -> Principal:
    """The caller: found by ``api.auth.AuthMiddleware`` from the headers before the body was read."""
    node: Node = request.app.state.node
    if not node.settings.auth.enabled:
        return LOCAL_PRINCIPAL
    found = request.scope.get("state", {}).get(STATE_KEY)
    if found is not None:
        return found
    # Only where the middleware is not installed (an app put together by hand): the same check, here.
    token = auth.token_from(request.scope["headers"])
    principal = await run_in_threadpool(authenticate, node.store, token) if token else None
    if principal is None:
        raise Pocket3DError(ErrorCode.UNAUTHORIZED, "the API key is not valid or was revoked" if token else
                            "an API key is required: 'Authorization: Bearer <key>' or 'X-API-Key: <key>'",
                            headers={"WWW-Authenticate": "Bearer"}, hint=KEY_HINT)
    request.state.key_id = principal.key_id  # for the access line: the key's id, never the key
    return principal


async def get_caller(request: Request, _bearer: Annotated[object, Security(BEARER)] = None,
                     _api_key: Annotated[object, Security(API_KEY)] = None) -> Principal | None:
    """The caller, or None when auth is on and the request carries no key (a wrong key is still a 401)."""
    node: Node = request.app.state.node
    if node.settings.auth.enabled and request.scope.get("state", {}).get(STATE_KEY) is None \
            and auth.token_from(request.scope["headers"]) is None:
        return None
    return await get_principal(request)


async def get_admin(principal: Annotated[Principal, Depends(get_principal)]) -> Principal:
    if not principal.is_admin:
        raise Pocket3DError(ErrorCode.FORBIDDEN, "this needs an admin key")
    return principal


NodeDep = Annotated[Node, Depends(get_node)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
PrincipalDep = Annotated[Principal, Depends(get_principal)]
CallerDep = Annotated[Principal | None, Depends(get_caller)]
AdminDep = Annotated[Principal, Depends(get_admin)]
