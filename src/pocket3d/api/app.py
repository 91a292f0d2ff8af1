"""The FastAPI application: routes under /api/v1, /metrics, one error format, request ids and access lines,
CORS from config, the docs, and the web app at /."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import urlsplit

from asgi_correlation_id import CorrelationIdMiddleware
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi_offline import FastAPIOffline
from starlette.concurrency import run_in_threadpool

from pocket3d import __version__, web
from pocket3d.api import compat, openapi
from pocket3d.api.auth import AuthMiddleware
from pocket3d.api.errors import install_handlers
from pocket3d.api.middleware import AccessLogMiddleware, BodyLimitMiddleware, RouteTemplates, valid_request_id
from pocket3d.api.routes import features, files, jobs, metrics, system, webhooks
from pocket3d.config import Settings
from pocket3d.models.spec import Feature
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
            await run_in_threadpool(log_start, node)
        try:
            yield
        finally:
            if manage_node:
                await run_in_threadpool(node.stop)

    # Swagger UI and ReDoc from the installed fastapi-offline package: the docs work without internet.
    app = FastAPIOffline(title="pocket3d", version=__version__, lifespan=lifespan, description=openapi.DESCRIPTION,
                         docs_url=openapi.DOCS_URL, redoc_url=None, static_url=openapi.ASSETS_URL,
                         swagger_ui_parameters=openapi.SWAGGER_UI_PARAMETERS)
    openapi.install_redoc(app)
    app.state.node = node
    install_handlers(app)
    openapi.install(app)

    for router in (features.router, jobs.router, system.router, system.caller_router, files.router, webhooks.router):
        app.include_router(router, prefix="/api/v1")
    if settings.metrics.enabled:
        app.include_router(metrics.router)
    # Foreign clients' contracts, each under /compat/<flavour> (kept out of the OpenAPI document: their own
    # clients document them, and they follow other conventions).
    compat.install(app, node)

    # The web app at "/" (its files under /app); the API and its docs stay where they are.
    web.install(app, connect=download_origins(settings))

    # The key is checked from the headers before anything reads a body.
    app.add_middleware(AuthMiddleware, store=node.store, enabled=settings.auth.enabled)
    # Uploads stream to disk under storage.max_file_size (api.uploads); everything else is JSON.
    app.add_middleware(BodyLimitMiddleware, limit=int(settings.server.max_request_size), exempt=("/api/v1/files",),
                       exempt_prefixes=compat.UPLOAD_PATHS)
    # CORS outside the key check and the body limit, so a browser reads a 401 or a 413 as what it is, not as a
    # CORS failure.
    if settings.server.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=settings.server.cors_origins,
                           allow_credentials=settings.server.cors_allow_credentials,
                           allow_methods=["GET", "POST", "DELETE", "OPTIONS"],
                           allow_headers=["Authorization", "X-API-Key", "Content-Type", "X-Request-ID",
                                          "Last-Event-ID", "Range", "If-None-Match", "Idempotency-Key"],
                           expose_headers=["X-Request-ID", "ETag", "Location", "Content-Range",
                                           "Idempotent-Replayed"])
    app.add_middleware(AccessLogMiddleware, observe=node.metrics.observe_request,
                       templates=RouteTemplates(lambda: app.openapi()["paths"]), log_access=settings.logging.access)
    # Ids are not secrets, only unique: random.getrandbits avoids a getrandom() syscall per request.
    app.add_middleware(CorrelationIdMiddleware, header_name="X-Request-ID", validator=valid_request_id,
                       generator=lambda: f"{random.getrandbits(128):032x}")
    # Outermost: a compat flavour served at / or on its own port is moved onto its mount before anything looks.
    app.add_middleware(compat.CompatMount, settings=settings)
    return app


def download_origins(settings: Settings) -> list[str]:
    """Where downloads are redirected, when they are (presigned URLs of an S3 store): the web app fetches outputs
    there, so its Content-Security-Policy names them (the bucket also needs a CORS rule for the server's origin)."""
    storage = settings.storage
    if storage.backend != "s3" or storage.s3.downloads != "redirect":
        return []
    endpoint = storage.s3.public_endpoint or storage.s3.endpoint
    if endpoint is None:
        return ["https://*.amazonaws.com"]
    parts = urlsplit(endpoint)
    # Virtual-hosted addressing puts the bucket in the host name.
    return [f"{parts.scheme}://{parts.netloc}", f"{parts.scheme}://*.{parts.netloc}"]


def log_start(node: Node) -> None:
    """Where to go, and what this server can do: the docs, the web app, the models that can run here, and a
    warning for each feature nothing can serve."""
    from pocket3d.api.routes.system import model_list

    server = node.settings.server
    host = f"[{server.host}]" if ":" in server.host else server.host
    base = f"http://{host}:{server.port}"
    models = model_list(node).models
    available = [m for m in models if m.available]
    log.info("API docs at %s%s (ReDoc at %s%s); web app at %s/", base, openapi.DOCS_URL, base, openapi.REDOC_URL,
             base)
    if not web.vendored():
        log.warning("the web app's browser libraries are missing: run `make web` in the checkout")
    log.info("%d of %d registered models are available here", len(available), len(models))
    for feature in Feature:
        listed = [m for m in models if m.feature == feature.value]
        usable = [m.id for m in listed if m.available]
        if usable:
            log.info("  %s: %s", feature.value, ", ".join(usable))
        elif not feature.is_stage_only:
            why = "; ".join(f"{m.id}: {', '.join(m.unavailable_reasons)}" for m in listed) or "none registered"
            log.warning("NO MODEL CAN SERVE %s: every such request will fail (%s). `pocket3d models` lists "
                        "the models and what each one needs", feature.value, why)
        if feature.is_stage_only and listed and not listed[0].available and usable:
            log.warning("%s uses %s: %s is unavailable (%s)", feature.value, usable[0], listed[0].id,
                        ", ".join(listed[0].unavailable_reasons))
