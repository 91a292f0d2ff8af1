"""``GET /metrics``: the Prometheus text format. With auth on it takes an admin key; an operator who would rather
not hand one to the scraper serves the same on ``metrics.port`` instead."""

from __future__ import annotations

from fastapi import APIRouter, Response

from pocket3d.api.deps import AdminDep, NodeDep
from pocket3d.api.openapi import error_responses

router = APIRouter(tags=["System"])
METRICS_RESPONSES = {200: {"description": "the Prometheus text format (version 0.0.4)",
                           "content": {"text/plain": {"schema": {"type": "string"},
                                                      "example": "pocket3d_jobs_submitted_total{feature=\"mesh_"
                                                                 "generation\"} 12.0\n"}}},
                     **error_responses(401, 403)}


@router.get("/metrics", response_class=Response, responses=METRICS_RESPONSES, operation_id="getMetrics",
            summary="Prometheus metrics of this server")
def metrics(node: NodeDep, _: AdminDep) -> Response:
    """Jobs submitted and finished (by feature, status, error code), the queue, stage and model-load durations,
    device memory, worker restarts, HTTP request durations, open event streams and webhook deliveries. With auth
    on this needs an admin key; `metrics.port` serves the same without one, for a scraper inside the network."""
    body, content_type = node.metrics.render()
    return Response(body, media_type=content_type)
