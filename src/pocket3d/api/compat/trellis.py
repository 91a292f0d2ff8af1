"""The TRELLIS.2 server of crossworld (seed 004) at ``/compat/trellis``, for its Rust client (``TrellisClient``, the
``trellis`` CLI): ``GET /health`` and a synchronous ``POST /generate`` answering the mesh as JSON.

The client retries by status code, each retry a new job: 422 fails at once (a bad body, or a job that failed for
a reason a retry would meet again), 500 is retried after 1, 2 and 4 s (a crashed or lost worker, out of memory),
503 is retried only when its body says ``still loading`` (here: the queue, or the share of the owner TRELLIS jobs
act as, is full), and a 503 without it means "Models not loaded" (no model can serve the request).
"""

from __future__ import annotations

import json
from typing import Literal

from fastapi import Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.concurrency import run_in_threadpool

from pocket3d.api import redact
from pocket3d.api.compat import base
from pocket3d.api.compat.base import CompatError
from pocket3d.api.schemas import MeshGenerationRequest
from pocket3d.errors import ErrorCode, Pocket3DError
from pocket3d.jobs.records import JobStatus
from pocket3d.models.spec import Feature

MODEL = "trellis2-4b"  # the model its clients were written for, used when available
STILL_LOADING = "still loading"  # the words that make the client retry a 503
# No room for the job now (the queue, or the share of the owner every TRELLIS job acts as): 503 "still loading".
NO_ROOM = {ErrorCode.QUEUE_FULL, ErrorCode.CONCURRENCY_LIMITED}
# Job failures a retry may get past; any other failure would happen again.
TRANSIENT = {ErrorCode.OUT_OF_MEMORY, ErrorCode.WORKER_CRASHED, ErrorCode.WORKER_LOST, ErrorCode.STORAGE_UNAVAILABLE,
             ErrorCode.INTERNAL_ERROR, ErrorCode.SERVER_BUSY}
NO_MODEL = {ErrorCode.MODEL_UNAVAILABLE, ErrorCode.NO_MODEL_FOR_REQUEST, ErrorCode.UNKNOWN_MODEL}


def _error(request: Request, e: CompatError) -> Response:
    message = e.message
    if e.code in NO_ROOM:
        message = f"{message} ({STILL_LOADING}: retry in a few seconds)"
    return JSONResponse({"detail": message}, status_code=e.status, headers=e.headers)


def _status_of(e: Pocket3DError) -> int:
    if e.code in NO_ROOM or e.code in NO_MODEL:
        return 503
    if e.code in TRANSIENT or e.http_status >= 500:
        return 500
    return 422


FLAVOUR = base.Flavour("trellis", _error, _status_of)
router = FLAVOUR.router()


class TrellisRequest(BaseModel):
    """The Rust client's ``GenerationRequest``; unknown keys are ignored."""

    model_config = ConfigDict(extra="ignore")
    image: str  # base64, with or without a data: prefix
    seed: int = 42
    resolution: Literal["512", "1024", "1536"] = "1024"
    ss_guidance_strength: float = Field(7.5, ge=0)
    shape_slat_guidance_strength: float = Field(3.0, ge=0)
    tex_slat_guidance_strength: float = Field(3.0, ge=0)
    ss_sampling_steps: int = Field(12, ge=1, le=100)
    shape_slat_sampling_steps: int = Field(12, ge=1, le=100)
    tex_slat_sampling_steps: int = Field(12, ge=1, le=100)

    @field_validator("resolution", mode="before")
    @classmethod
    def _as_string(cls, v: object) -> object:
        return str(v) if isinstance(v, int) and not isinstance(v, bool) else v


def _native(request: Request, body: TrellisRequest) -> MeshGenerationRequest:
    node = base.node_of(request)
    model_id = base.choose_model(node, "trellis", Feature.MESH_GENERATION, {"image"}, images=1, output_format="json",
                                 preferred=(MODEL,))
    knobs = body.model_dump(exclude={"image", "seed", "resolution"})
    knobs["resolution"] = int(body.resolution)
    return MeshGenerationRequest(images=[base.data_uri(body.image)], seed=body.seed % 2**32, output_format="json",
                                 model_preference=model_id,
                                 parameters=base.model_knobs(node.registry.get(model_id), knobs))


@router.post("/generate")
async def generate(request: Request) -> Response:
    principal = await base.principal_for(request, FLAVOUR)
    body = base.parse(TrellisRequest, await base.json_body(request))
    native = await run_in_threadpool(_native, request, body)
    job_id = await base.submit(request, principal, Feature.MESH_GENERATION, native)
    try:
        job = await base.wait_for_job(request, job_id)
    except base.ClientGone:
        return Response(status_code=499)  # nobody reads it
    if job.status != JobStatus.SUCCEEDED:
        raise CompatError(500 if job.error_code in TRANSIENT else 422, base.job_error(request, job),
                          code=job.error_code)
    output = base.public_output(job, "model.json")
    if output is None:
        raise CompatError(500, "the mesh has expired already")
    mesh = json.loads(await run_in_threadpool(base.read_output, base.node_of(request), output))
    return JSONResponse(_result(mesh))


def _result(mesh: dict) -> dict:
    """The native model.json as the client's ``TrellisResult``: exactly these four keys, faces as integers,
    colours as RGB floats in 0-1 (natively RGBA 0-255), never ``glb_data`` (typed as bytes there)."""
    colours = mesh.get("vertex_colors")
    return {
        "vertices": mesh["vertices"],
        "faces": [[int(i) for i in face] for face in mesh["faces"]],
        "vertex_colors": [[round(c / 255.0, 6) for c in rgba[:3]] for rgba in colours] if colours else None,
        "vertex_normals": mesh.get("normals"),
    }


@router.get("/health")
async def health(request: Request) -> JSONResponse:
    """From what the registry and the devices know now (the client waits 5 s): no job, no model load."""
    node = base.node_of(request)
    pinned = node.settings.compat.trellis.model
    model_id = pinned or MODEL
    reasons = base.model_unavailable(node, model_id)
    trellis_ready = any(not base.model_unavailable(node, m.spec.id) for m in node.registry.all()
                        if m.spec.id.startswith("trellis2"))
    gpus = [d for d in node.scheduler.device_list if d.kind == "cuda"]
    error = None
    if reasons:
        error = f"{model_id}: {'; '.join(reasons)}"
        if not pinned:
            error += " (compat.trellis.model names another model to serve TRELLIS clients)"
    return JSONResponse({"status": "error" if reasons else "ready", "trellis_available": trellis_ready,
                         "gpu_available": bool(gpus), "gpu_name": gpus[0].name if gpus else None,
                         "model_loaded": not reasons,
                         "error": error if error is None or redact.sees_everything(request) else redact.text(error)})
