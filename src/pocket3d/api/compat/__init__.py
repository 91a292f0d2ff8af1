"""Drop-in compatibility: the clients of other 3D servers talk to pocket3d with only their base URL changed.

One module per foreign contract (``../shared/COMPAT.md``), each a router under ``/compat/<flavour>``:

| flavour | its clients |
|---|---|
| ``hunyuan`` | Hunyuan3D-2/2.1 ``api_server.py``: Tencent's Blender add-on, blender-mcp, SyncTwin |
| ``trellis`` | crossworld's TRELLIS.2 server: its Rust client and CLI |
| ``protoscale`` | ProtoScale-AI's backend: its Vue app |
| ``sam3d`` | the SAM 3D all-in-one service |
| ``tripo`` | Tripo's API v3: the ``tripo3d`` SDK |
| ``comfy`` | ComfyUI's API nodes (its Tripo node) |

``compat.root`` also serves one of the four root-path flavours at ``/`` (for a client with a hard-coded origin),
and ``compat.<flavour>.listen`` serves a flavour at the root of a port of its own. Both rewrite the path onto the
flavour's mount before anything else sees the request (:class:`CompatMount`), so one router serves every way in.
"""

from __future__ import annotations

import re
from types import ModuleType

from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from pocket3d.api.compat import base, comfy, hunyuan, protoscale, sam3d, trellis, tripo
from pocket3d.config import Settings
from pocket3d.node import Node

FLAVOURS: dict[str, ModuleType] = {"hunyuan": hunyuan, "trellis": trellis, "protoscale": protoscale, "sam3d": sam3d,
                                   "tripo": tripo, "comfy": comfy}
# Where uploads arrive: streamed to disk under storage.max_file_size, not held to server.max_request_size.
UPLOAD_PATHS = ("/compat/tripo/v3/files", "/compat/tripo/uploads/", "/compat/comfy/storage/",
                "/compat/protoscale/api/upload", "/compat/sam3d/api/inference")


# A foreign client pointed at the bare origin calls these: the answer's hint names its mount.
_MISSED_MOUNTS = (
    ("/v3/", "a Tripo SDK? Set its v3_base_url to this server's origin + /compat/tripo"),
    ("/proxy/tripo/", "ComfyUI? Start it with --comfy-api-base <this server's origin>/compat/comfy/"),
    ("/customers/", "ComfyUI? Start it with --comfy-api-base <this server's origin>/compat/comfy/"),
    ("/api/upload", "ProtoScale's app? Build it with VITE_API_URL=<this server's origin>/compat/protoscale"),
    ("/api/jobs/", "ProtoScale's app? Build it with VITE_API_URL=<this server's origin>/compat/protoscale"),
    ("/api/inference", "a SAM 3D client? Its base URL is this server's origin + /compat/sam3d"),
    ("/generate", "a Hunyuan3D or TRELLIS.2 client? Its server URL is this server's origin + /compat/hunyuan or "
                  "/compat/trellis (or the operator sets compat.root)"),
    ("/send", "a Hunyuan3D client? Its server URL is this server's origin + /compat/hunyuan"),
    ("/status/", "a Hunyuan3D client? Its server URL is this server's origin + /compat/hunyuan"),
    ("/health", "pocket3d's own health is /api/v1/system/health; a foreign client's is under /compat/<flavour>"),
)


def missed_mount_hint(path: str) -> str | None:
    """For a 404 on a path a foreign client calls, where to point that client instead."""
    return next((hint for prefix, hint in _MISSED_MOUNTS if path.startswith(prefix)), None)


def enabled(settings: Settings) -> list[str]:
    return [name for name in FLAVOURS if settings.compat.flavour(name).enabled]


def listeners(settings: Settings) -> dict[int, str]:
    """Port -> flavour, for the flavours that listen on a port of their own."""
    return {settings.compat.flavour(name).listen: name for name in enabled(settings)
            if settings.compat.flavour(name).listen is not None}


def install(app: FastAPI, node: Node) -> None:
    """The enabled flavours' routers under their mounts, and the signer of their result URLs."""
    app.state.compat_signer = base.Signer(base.load_secret(node.settings))
    for name in enabled(node.settings):
        app.include_router(FLAVOURS[name].router, prefix=base.mount(name))


class CompatMount:
    """Serves a flavour where its clients look for it: every request on a flavour's own port, and on the main
    port the root flavour's routes (``compat.root``), are moved onto the flavour's mount. URLs the flavour hands
    out then leave the mount out (``base.served_path``)."""

    def __init__(self, app: ASGIApp, *, settings: Settings):
        self.app = app
        self.ports = listeners(settings)
        self.root = settings.compat.root
        self.root_routes = [re.compile(route.path_regex.pattern) for route in FLAVOURS[self.root].router.routes] \
            if self.root else []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        server = scope.get("server")
        flavour = self.ports.get(server[1]) if server and self.ports else None
        root_path = scope.get("root_path", "")
        path = scope["path"]
        local = path[len(root_path):] if root_path and path.startswith(root_path) else path
        if flavour is None and self.root and any(r.match(local) for r in self.root_routes):
            flavour = self.root
        if flavour is not None:
            moved = root_path + base.mount(flavour) + local
            scope = {**scope, "path": moved, "raw_path": moved.encode(), base.SERVED_AT: root_path,
                     base.LISTENER: flavour in self.ports.values() and server is not None
                     and self.ports.get(server[1]) == flavour}
        await self.app(scope, receive, send)
