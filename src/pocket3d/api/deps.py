"""FastAPI dependencies: the node, settings and the calling principal.

They are ``async def`` on purpose: a plain ``def`` dependency costs a threadpool round trip per request.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from starlette.concurrency import run_in_threadpool

from pocket3d.api.keys import LOCAL_PRINCIPAL, Principal, authenticate
from pocket3d.config import Settings
from pocket3d.errors import ErrorCode, Pocket3DError
from pocket3d.node import Node


async def get_node(request: Request) -> Node:
    return request.app.state.node


async def get_settings(request: Request) -> Settings:
    return request.app.state.node.settings


async def get_principal(request: Request) -> Principal:
    node: Node = request.app.state.node
    if not node.settings.auth.enabled:
        return LOCAL_PRINCIPAL
    headers = request.headers
    token = headers.get("x-api-key")
    if token is None:
        scheme, _, value = headers.get("authorization", "").partition(" ")
        token = value.strip() if scheme.lower() == "bearer" else None
    if not token:
        raise Pocket3DError(ErrorCode.UNAUTHORIZED, "an API key is required: 'Authorization: Bearer <key>' "
                            "or 'X-API-Key: <key>'", headers={"WWW-Authenticate": "Bearer"})
    principal = await run_in_threadpool(authenticate, node.store, token)
    if principal is None:
        raise Pocket3DError(ErrorCode.UNAUTHORIZED, "the API key is not valid or was revoked",
                            headers={"WWW-Authenticate": "Bearer"})
    return principal


NodeDep = Annotated[Node, Depends(get_node)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
PrincipalDep = Annotated[Principal, Depends(get_principal)]
