"""A worker's small HTTP port (``pocket3d worker``, server.port): health for the orchestrator, readiness, and
Prometheus metrics. No public API, no auth: it belongs inside the cluster's network."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response

from pocket3d import __version__
from pocket3d.node import Node

# The paths a gateway serves too, so one probe fits both (deploy/ uses them)
HEALTH_PATH = "/api/v1/system/health"
READY_PATH = "/api/v1/system/ready"
METRICS_PATH = "/metrics"


def create_worker_app(node: Node) -> FastAPI:
    app = FastAPI(title="pocket3d worker", version=__version__, docs_url=None, redoc_url=None, openapi_url=None)

    @app.get(HEALTH_PATH)
    def health() -> dict:
        """Alive (a draining worker is alive: it is finishing its stages)."""
        return {"status": "draining" if node.scheduler.draining else "ok", "version": __version__,
                "node": node.node_id}

    @app.get(READY_PATH)
    def ready() -> JSONResponse:
        reasons = worker_problems(node)
        status = "ready" if not reasons else "not_ready"
        return JSONResponse({"ready": not reasons, "status": status, "reasons": reasons},
                            status_code=200 if not reasons else 503)

    if node.settings.metrics.enabled:
        @app.get(METRICS_PATH)
        def metrics() -> Response:
            body, content_type = node.metrics.render()
            return Response(body, media_type=content_type)

    return app


def worker_problems(node: Node) -> list[str]:
    """Why this worker cannot take work now ([]: it can)."""
    reasons: list[str] = []
    try:
        node.store.ping()
    except Exception as e:
        reasons.append(f"store unreachable: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
    if (storage := node.artifacts.problem()) is not None:
        reasons.append(storage)
    if (disk := node.storage_health.problem()) is not None:
        reasons.append(disk)
    if not node.scheduler.device_list:
        reasons.append("no device found")
    if node.scheduler.draining:
        reasons.append("draining: it takes no more work")
    reasons += [f"warming: loading {w}" for w in node.scheduler.warming()]
    return reasons
