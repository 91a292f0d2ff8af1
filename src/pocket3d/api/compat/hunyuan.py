"""Hunyuan3D-2 / 2.1 ``api_server.py`` at ``/compat/hunyuan``: Tencent's Blender add-on, blender-mcp (LOCAL_API) and
SyncTwin's Omniverse extension.

``POST /generate`` answers the GLB itself (synchronous), ``POST /send`` a job id that ``GET /status/{uid}`` follows;
``GET /health`` is the 2.1 server's. ``texture: false`` (the original's default) asks for the shape only.
"""

from __future__ import annotations

import base64
import secrets

from fastapi import Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict
from starlette.concurrency import run_in_threadpool

from pocket3d.api.compat import base
from pocket3d.api.compat.base import CompatError
from pocket3d.api.schemas import MeshGenerationRequest, TextureGenerationRequest
from pocket3d.jobs.records import JobStatus
from pocket3d.models.pipeline import PAINT_STAGE
from pocket3d.models.spec import Feature

# Preferred when available (compat.hunyuan.model overrides; else the registry's pick).
PREFERRED = ("hunyuan3d-2.1", "hunyuan3d-2", "hunyuan3d-2-turbo", "hunyuan3d-2mini")
TEXTURE_PREFERRED = ("hunyuan3d-2.1-paint", "hunyuan3d-2-paint")
WORKER_ID = secrets.token_hex(3)  # the 2.1 server's worker_id: six hex digits, stable per process


def _error(request: Request, e: CompatError) -> Response:
    # /generate and /send fail as the original did: 404 {"text", "error_code": 1}, which clients show as text.
    if request.url.path.endswith(("/generate", "/send")):
        status = e.status if e.status == 401 else 404
        return JSONResponse({"text": e.message, "error_code": 1}, status_code=status, headers=e.headers)
    return JSONResponse({"detail": e.message}, status_code=e.status, headers=e.headers)


FLAVOUR = base.Flavour("hunyuan", _error)
router = FLAVOUR.router()


class HunyuanRequest(BaseModel):
    """The original's body; unknown keys are ignored, and only the knobs a client sends reach the model."""

    model_config = ConfigDict(extra="ignore")
    image: str | None = None  # plain base64 (a data: prefix is taken off)
    text: str | None = None
    mesh: str | None = None  # base64 GLB to texture
    seed: int = 1234
    octree_resolution: int | None = None
    num_inference_steps: int | None = None  # not limited to 2.1's 1-20: Blender sends 20, its UI up to 50
    guidance_scale: float | None = None
    texture: bool = False
    face_count: int | None = None
    num_chunks: int | None = None
    remove_background: bool = True  # ignored: the cut-out stage follows the model's spec
    type: str = "glb"


def _native(request: Request, body: HunyuanRequest) -> tuple[Feature, MeshGenerationRequest | TextureGenerationRequest]:
    if not body.image and not (body.text and body.text.strip()):
        raise CompatError(422, "give image (base64) or text")
    if body.type.lower() != "glb":
        raise CompatError(422, f"type {body.type!r}: this server answers glb only")
    node = base.node_of(request)
    images = [base.data_uri(body.image)] if body.image else []
    text = body.text if not images else None
    kinds = {"image"} if images else {"text"}
    knobs = {"steps": body.num_inference_steps, "guidance_scale": body.guidance_scale,
             "octree_resolution": body.octree_resolution, "num_chunks": body.num_chunks,
             "max_faces": body.face_count}
    seed = body.seed % 2**32
    if body.mesh:
        model_id = base.choose_model(node, "hunyuan", Feature.TEXTURE_GENERATION, kinds | {"mesh"},
                                     images=len(images), text=text, preferred=TEXTURE_PREFERRED)
        parameters = base.model_knobs(node.registry.get(model_id), knobs)
        return Feature.TEXTURE_GENERATION, TextureGenerationRequest(
            mesh=base.data_uri(body.mesh), images=images, text_prompt=text, seed=seed, model_preference=model_id,
            parameters=parameters)
    model_id = base.choose_model(node, "hunyuan", Feature.MESH_GENERATION, kinds, images=len(images), text=text,
                                 preferred=PREFERRED)
    parameters = base.model_knobs(node.registry.get(model_id), knobs)
    return Feature.MESH_GENERATION, MeshGenerationRequest(
        images=images, text_prompt=text, seed=seed, model_preference=model_id, parameters=parameters,
        texture=body.texture)


async def _submit(request: Request) -> str:
    principal = await base.principal_for(request, FLAVOUR)
    body = base.parse(HunyuanRequest, await base.json_body(request))
    feature, native = await run_in_threadpool(_native, request, body)
    return await base.submit(request, principal, feature, native)


@router.post("/generate")
async def generate(request: Request) -> Response:
    job_id = await _submit(request)
    try:
        job = await base.wait_for_job(request, job_id)
    except base.ClientGone:
        return Response(status_code=499)  # nobody reads it
    if job.status != JobStatus.SUCCEEDED:
        raise CompatError(404, base.job_error(request, job))
    return base.output_response(request, job, "model.glb", CompatError(404, "the model has expired"))


@router.post("/send")
async def send(request: Request) -> JSONResponse:
    return JSONResponse({"uid": await _submit(request)})


@router.get("/status/{uid}")
async def status(uid: str, request: Request) -> JSONResponse:
    principal = await base.principal_for(request, FLAVOUR)
    job = await base.read_job(request, principal, uid)
    if job is None:
        raise CompatError(404, f"task {uid} not found")
    # Exactly these keys: SyncTwin builds a class from the body, and an extra key kills its task.
    if job.status == JobStatus.SUCCEEDED:
        output = base.public_output(job, "model.glb")
        if output is None:
            return JSONResponse({"status": "error", "message": "the model has expired"})
        data = await run_in_threadpool(base.read_output, base.node_of(request), output)
        return JSONResponse({"status": "completed", "model_base64": base64.b64encode(data).decode()})
    if job.status.is_final:
        return JSONResponse({"status": "error", "message": base.job_error(request, job)})
    painting = job.current_stage is not None and job.stages[job.current_stage].name == PAINT_STAGE
    return JSONResponse({"status": "texturing" if painting else "processing"})


@router.get("/health")
async def health() -> JSONResponse:
    return JSONResponse({"status": "healthy", "worker_id": WORKER_ID})
