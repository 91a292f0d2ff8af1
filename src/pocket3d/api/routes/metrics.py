"""``GET /metrics``: the Prometheus text format. With auth on it takes an admin key; an operator who would rather
not hand one to the scraper serves the same on ``metrics.port`` instead."""

from __future__ import annotations

from fastapi import APIRouter, Response

from pocket3d.api.deps import AdminDep, NodeDep
from pocket3d.api.schemas import ErrorBody

router = APIRouter(tags=["System"])


@router.get("/metrics", response_class=Response, summary="Prometheus metrics of this node",
            responses={200: {"content": {"text/plain": {}}, "description": "the Prometheus text format"},
                       401: {"model": ErrorBody}, 403: {"model": ErrorBody}})
def metrics(node: NodeDep, _: AdminDep) -> Response:
    body, content_type = node.metrics.render()
    return Response(body, media_type=content_type)
