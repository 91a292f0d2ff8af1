"""The four feature routes: each validates its request, persists a job and answers 202 (or the finished job)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Header, Query
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from pocket3d.api import examples
from pocket3d.api import redact
from pocket3d.api.deps import NodeDep, PrincipalDep
from pocket3d.api.keys import Principal
from pocket3d.api.openapi import error_responses
from pocket3d.api.schemas import (
    JobAccepted,
    JobView,
    MeshGenerationRequest,
    RiggingRequest,
    SegmentationRequest,
    TextureGenerationRequest,
    _FeatureRequest,
)
from pocket3d.api.submission import Submitted, inline_submittable, submit_inline, submit_request
from pocket3d.api.views import job_links, job_view
from pocket3d.errors import ErrorCode, Pocket3DError
from pocket3d.models.spec import Feature
from pocket3d.node import Node

router = APIRouter()
SUBMIT_RESPONSES = {
    202: {"model": JobAccepted, "description": "accepted: follow links.self (poll) or links.events (SSE)",
          "headers": {"Location": {"description": "the job's URL", "schema": {"type": "string"}}}},
    200: {"model": JobView, "description": "finished within ?wait seconds, or the job an earlier submit with the "
          "same Idempotency-Key made (header Idempotent-Replayed: true): the job as GET /jobs/{job_id} shows it"},
    **error_responses(400, 401, 404, 409, 413, 422, 429, 503)}
WaitQuery = Annotated[float, Query(ge=0, description="seconds to wait for the job to finish before answering "
                                   "(capped by server.max_wait); 0 answers at once", examples=[30])]
IdempotencyKeyHeader = Annotated[str | None, Header(
    alias="Idempotency-Key", description="any unique string up to 255 characters (a UUID): a retried submit "
    "with the same key and body returns the job the first one made, for server.idempotency_ttl (24 h); the same "
    "key with another body answers 409 IDEMPOTENCY_KEY_REUSED")]


def check_key(key: str | None) -> str | None:
    if key is not None and not (0 < len(key) <= 255 and key.isascii() and key.isprintable()):
        raise Pocket3DError(ErrorCode.INVALID_REQUEST, "Idempotency-Key: 1 to 255 printable ASCII characters "
                            "(a UUID will do)", {"field": "Idempotency-Key"})
    return key


async def _accept(node: Node, principal: Principal, feature: Feature, req: _FeatureRequest,
                  wait: float, idempotency_key: str | None) -> JSONResponse:
    key = check_key(idempotency_key)
    if inline_submittable(node, req, key):
        submitted = await submit_inline(node, principal, feature, req)
    else:
        submitted = await run_in_threadpool(submit_request, node, principal, feature, req, key)
    return await answer(node, principal, submitted, wait)


async def answer(node: Node, principal: Principal, submitted: Submitted, wait: float) -> JSONResponse:
    """A submit's answer: 202 with the job's links, or the job itself when it finished within ``wait`` seconds
    or an earlier submit with the same Idempotency-Key made it."""
    job_id = submitted.job_id
    wait = min(wait, node.settings.server.max_wait)
    if wait > 0:
        job = await node.bus.wait_final(job_id, wait)
    else:
        job = await run_in_threadpool(node.snapshots.get, job_id) if submitted.replayed else None
    if job is not None and (job.status.is_final or submitted.replayed):
        # Finished in time, or a retried submit: the job itself, as GET /jobs/{id} shows it.
        shown = job if principal.is_admin else redact.job(job)
        view = job_view(shown, node.scheduler.estimate(job))
        return JSONResponse(view.model_dump(mode="json"), status_code=200,
                            headers={"Idempotent-Replayed": "true"} if submitted.replayed else None)
    body = JobAccepted(job_id=job_id, status=job.status.value if job else "queued", links=job_links(job_id))
    return JSONResponse(body.model_dump(mode="json"), status_code=202,
                        headers={"Location": body.links.self})


@router.post("/mesh/generate", tags=["Mesh Generation"], status_code=202, responses=SUBMIT_RESPONSES,
             operation_id="createMeshJob", summary="Text or image(s) to a textured mesh")
async def generate_mesh(req: Annotated[MeshGenerationRequest, Body(openapi_examples=examples.mesh_generation())],
                        node: NodeDep, principal: PrincipalDep, wait: WaitQuery = 0,
                        idempotency_key: IdempotencyKeyHeader = None) -> JSONResponse:
    """Make a textured mesh from a text prompt, one image of an object, or 2-8 views of it (or a prompt and
    images together). Images are file ids from `POST /api/v1/files` or `data:` URIs. Without `model_preference`
    the first available model that takes these inputs is chosen (`GET /api/v1/system/models`)."""
    return await _accept(node, principal, Feature.MESH_GENERATION, req, wait, idempotency_key)


@router.post("/texture/generate", tags=["Texture Generation"], status_code=202, responses=SUBMIT_RESPONSES,
             operation_id="createTextureJob", summary="Texture a given mesh from text or image(s)")
async def generate_texture(req: Annotated[TextureGenerationRequest,
                                          Body(openapi_examples=examples.texture_generation())],
                           node: NodeDep, principal: PrincipalDep, wait: WaitQuery = 0,
                           idempotency_key: IdempotencyKeyHeader = None) -> JSONResponse:
    """Paint a texture onto `mesh`, guided by `text_prompt`, reference `images`, or both. The mesh keeps its
    geometry (above a model's face limit it may be decimated first)."""
    return await _accept(node, principal, Feature.TEXTURE_GENERATION, req, wait, idempotency_key)


@router.post("/segment", tags=["Mesh Segmentation"], status_code=202, responses=SUBMIT_RESPONSES,
             operation_id="createSegmentationJob", summary="Split a mesh into labelled parts")
async def segment(req: Annotated[SegmentationRequest, Body(openapi_examples=examples.segmentation())],
                  node: NodeDep, principal: PrincipalDep, wait: WaitQuery = 0,
                  idempotency_key: IdempotencyKeyHeader = None) -> JSONResponse:
    """Split `mesh` into parts: a GLB with a named node per part, and `labels.json` with the part of every face
    of the input mesh, in its order."""
    return await _accept(node, principal, Feature.SEGMENTATION, req, wait, idempotency_key)


@router.post("/rig", tags=["Auto-Rigging"], status_code=202, responses=SUBMIT_RESPONSES,
             operation_id="createRiggingJob", summary="Add a skeleton and skin weights to a mesh")
async def rig(req: Annotated[RiggingRequest, Body(openapi_examples=examples.rigging())],
              node: NodeDep, principal: PrincipalDep, wait: WaitQuery = 0,
              idempotency_key: IdempotencyKeyHeader = None) -> JSONResponse:
    """Give `mesh` a skeleton and skin weights: a skinned GLB, or FBX. A humanoid standing upright gets a
    humanoid joint layout."""
    return await _accept(node, principal, Feature.AUTO_RIGGING, req, wait, idempotency_key)
