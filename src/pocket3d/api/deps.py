"""FastAPI dependencies: the node, settings and the calling principal."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from pocket3d.api.keys import LOCAL_PRINCIPAL, Principal, authenticate
from pocket3d.config import Settings
from pocket3d.errors import ErrorCode, Pocket3DError
from pocket3d.node import Node


def get_node(request: Request) -> Node:
    return request.app.state.node


def get_settings(request: Request) -> Settings:
    return request.app.state.node.settings


def get_principal(request: Request) -> Principal:
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
    principal = authenticate(node.store, token)
    if principal is None:
        raise Pocket3DError(ErrorCode.UNAUTHORIZED, "the API key is not valid or was revoked",
                            headers={"WWW-Authenticate": "Bearer"})
    return principal


NodeDep = Annotated[Node, Depends(get_node)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
PrincipalDep = Annotated[Principal, Depends(get_principal)]
