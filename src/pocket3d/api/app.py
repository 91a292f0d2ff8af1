"""The FastAPI application: routes under /api/v1, one error format, request ids, CORS from config."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from starlette.concurrency import run_in_threadpool

from pocket3d import __version__
from pocket3d.api.errors import install_handlers
from pocket3d.api.middleware import BodyLimitMiddleware, RequestIdMiddleware
from pocket3d.api.routes import features, files, jobs, system
from pocket3d.node import Node

log = logging.getLogger(__name__)


def create_app(node: Node, *, manage_node: bool = True) -> FastAPI:
    """``manage_node``: start the node's scheduler with the app and stop it on shutdown."""
    settings = node.settings

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        node.bus.bind(asyncio.get_running_loop())
        if manage_node:
            await run_in_threadpool(node.start)
        try:
            yield
        finally:
            if manage_node:
                await run_in_threadpool(node.stop)

    app = FastAPI(title="pocket3d", version=__version__, lifespan=lifespan,
                  description="Text or images to textured meshes, textures for meshes, part segmentation and "
                              "auto-rigging, as jobs: submit, follow, download.")
    app.state.node = node
    install_handlers(app)

    for router in (features.router, jobs.router, system.router, files.router):
        app.include_router(router, prefix="/api/v1")

    if settings.server.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=settings.server.cors_origins,
                           allow_credentials=settings.server.cors_allow_credentials,
                           allow_methods=["GET", "POST", "OPTIONS"],
                           allow_headers=["Authorization", "X-API-Key", "Content-Type", "X-Request-ID",
                                          "Last-Event-ID", "Range", "If-None-Match", "Idempotency-Key"],
                           expose_headers=["X-Request-ID", "ETag", "Location", "Content-Range",
                                           "Idempotent-Replayed"])
    # Uploads stream to disk under storage.max_file_size (api.uploads); everything else is JSON.
    app.add_middleware(BodyLimitMiddleware, limit=int(settings.server.max_request_size), exempt=("/api/v1/files",))
    app.add_middleware(RequestIdMiddleware)
    return app
