"""The SAM 3D all-in-one service (seed 002) at ``/compat/sam3d``: a synchronous ``POST /api/inference`` that answers a
root-relative link to the GLB, the GLB itself at that link, and ``GET /health`` that is 200 only when a model can
serve the request.

The link carries the mount prefix (clients resolve it against the host) and a signature valid until the output
expires, as the original's files were fetched without credentials. The upload is kept only while its job needs
it, as the original's PRD asks.
"""

from __future__ import annotations

import re
import time

from fastapi import Request, Response
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from pocket3d.api import uploads
from pocket3d.api.compat import base
from pocket3d.api.compat.base import CompatError
from pocket3d.api.routes.files import store_upload
from pocket3d.api.schemas import MeshGenerationRequest
from pocket3d.errors import ErrorCode, Pocket3DError
from pocket3d.jobs import transitions
from pocket3d.jobs.records import JobStatus
from pocket3d.models.spec import Feature

MODEL = "sam3d-objects"  # the model its clients were written for, used when available
NOT_AN_IMAGE = "File must be an image"
_OUTPUT = re.compile(r"(\d+)_([\w-]{1,64})-(job_[0-9A-Za-z]+)\.glb")


def _error(request: Request, e: CompatError) -> Response:
    return JSONResponse({"detail": e.message}, status_code=e.status, headers=e.headers)


FLAVOUR = base.Flavour("sam3d", _error)
router = FLAVOUR.router()


@router.post("/api/inference")
async def inference(request: Request) -> Response:
    principal = await base.principal_for(request, FLAVOUR)
    node = base.node_of(request)
    try:
        staged = await uploads.receive_upload(request, node.artifacts.tmp, int(node.settings.storage.max_file_size))
    except Pocket3DError as e:
        if e.code == ErrorCode.INVALID_REQUEST or e.code == ErrorCode.UNSUPPORTED_MEDIA_TYPE:
            # FastAPI's answer to a form without its file, as the original gave it
            return JSONResponse({"detail": [{"type": "missing", "loc": ["body", "file"], "msg": "Field required",
                                             "input": None}]}, status_code=422)
        raise
    if not (staged.content_type or "").startswith("image/"):
        staged.discard()
        raise CompatError(400, NOT_AN_IMAGE)
    try:
        upload = await run_in_threadpool(store_upload, node, principal.owner_id, staged)
    except Pocket3DError as e:
        raise CompatError(400, f"{NOT_AN_IMAGE}: {e.message}") from None
    try:
        if upload.kind != "image":
            raise CompatError(400, f"{NOT_AN_IMAGE}: this is a {upload.format} mesh")
        model_id = await run_in_threadpool(base.choose_model, node, "sam3d", Feature.MESH_GENERATION, {"image"},
                                           images=1, preferred=(MODEL,))
        job_id = await base.submit(request, principal, Feature.MESH_GENERATION, MeshGenerationRequest(
            images=[upload.file_id], model_preference=model_id))
    finally:
        # The job holds the bytes while it needs them; nothing of the upload stays beyond that.
        await run_in_threadpool(transitions.delete_file, node.store, upload.file_id)
    try:
        job = await base.wait_for_job(request, job_id)
    except base.ClientGone:
        return Response(status_code=499)  # nobody reads it
    if job.status != JobStatus.SUCCEEDED:
        raise CompatError(500, base.job_error(request, job), code=job.error_code)
    stem = re.sub(r"[^\w-]+", "_", (upload.filename or "image").rsplit(".", 1)[0]).strip("_")[:64] or "image"
    path = f"/outputs/{int(job.created_at)}_{stem}-{job.id}.glb"
    url = base.signed_url(request, FLAVOUR, path, base.output_expiry(request, job), absolute_url=False)
    seconds = (job.finished_at or time.time()) - (job.started_at or job.created_at)
    return JSONResponse({"status": "success", "download_url": url, "inference_time": round(seconds, 3)})


@router.get("/outputs/{name}")
async def output(name: str, request: Request) -> Response:
    """The GLB an inference made: no credentials, the link's signature instead; 404 once it has expired."""
    found = _OUTPUT.fullmatch(name)
    if found is None:
        raise CompatError(404, "Not Found")
    base.check_signed(request)
    job = await base.snapshot(request, found.group(3))
    if job is None:
        raise CompatError(404, "Not Found")
    return base.output_response(request, job, "model.glb", CompatError(404, "the model has expired"))


@router.get("/health")
async def health(request: Request) -> JSONResponse:
    """Ready only when a model can serve an inference now: sam3d-objects (or compat.sam3d.model), else any
    image-to-mesh model."""
    node = base.node_of(request)
    try:
        await run_in_threadpool(base.choose_model, node, "sam3d", Feature.MESH_GENERATION, {"image"}, images=1,
                                preferred=(MODEL,))
    except Pocket3DError:
        return JSONResponse({"detail": "Model not initialized"}, status_code=503)
    return JSONResponse({"status": "ready", "model": "loaded"})
