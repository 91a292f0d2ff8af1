"""Tripo's API v3 at ``/compat/tripo`` (routes ``/v3/...``), for the ``tripo3d`` SDK 1.0.0:
``TripoClient(api_key="tsk_" + <pocket3d key>, v3_base_url="http://host:port/compat/tripo")``.

Envelope ``{"code": 0, "data": ...}``; errors are ``{"code": <non-zero>, "message", "suggestion"?}`` with an HTTP
status. A task is a native job (``task_id`` = the job id); its results are signed absolute URLs, fetched without a
key. ``pocket3d.api.compat.comfy`` serves ComfyUI's v2-style proxy from the same translation.
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from pocket3d.api import uploads
from pocket3d.api.compat import base
from pocket3d.api.compat.base import CompatError, Flavour
from pocket3d.api.keys import Principal
from pocket3d.api.routes.files import store_upload
from pocket3d.api.schemas import (
    VIEW_ORDER,
    MeshGenerationRequest,
    Quality,
    RiggingRequest,
    SegmentationRequest,
    TextureGenerationRequest,
    _FeatureRequest,
)
from pocket3d.errors import ErrorCode, Pocket3DError
from pocket3d.jobs.records import JobRecord, JobStatus
from pocket3d.jobs.store import new_id
from pocket3d.models.spec import Feature

# Non-zero business codes by HTTP status (pocket3d's own numbering; the SDK raises TripoAPIError on any).
CODES = {400: 2002, 401: 1002, 403: 1003, 404: 2001, 409: 2003, 410: 2004, 413: 2005, 415: 2006, 422: 2002,
         429: 2000, 500: 1000, 503: 1001, 504: 1004}
# A failed task's error_code, by the native job's error.code.
TASK_ERRORS = {ErrorCode.INVALID_INPUT: 2002, ErrorCode.MODEL_ERROR: 3001, ErrorCode.OUT_OF_MEMORY: 3002,
               ErrorCode.TIMEOUT: 3003, ErrorCode.WORKER_CRASHED: 3004, ErrorCode.WORKER_LOST: 3005,
               ErrorCode.EXPORT_FAILED: 3006, ErrorCode.STORAGE_UNAVAILABLE: 3007}
UPLOAD_LINK_SECONDS = 3600
UPLOAD_INSTEAD = "pass the image's local path (the SDK uploads it) or a file_token from POST /v3/files"
BALANCE = {"balance": 1_000_000.0, "frozen": 0.0}  # no credits here; clients that check the balance go on


def error_body(e: CompatError) -> dict[str, Any]:
    body: dict[str, Any] = {"code": CODES.get(e.status, 1000), "message": e.message}
    if e.hint:
        body["suggestion"] = e.hint
    return body


def _error(request: Request, e: CompatError) -> Response:
    return JSONResponse(error_body(e), status_code=e.status, headers=e.headers)


FLAVOUR = Flavour("tripo", _error)
router = FLAVOUR.router()


def envelope(data: Any) -> JSONResponse:
    return JSONResponse({"code": 0, "data": data})


# -- requests -----------------------------------------------------------------------------------------------------

class GenerationOptions(BaseModel):
    """What the generation routes share. Other options are accepted and have no effect (README: Tripo)."""

    model_config = ConfigDict(extra="ignore")
    model: str | None = None  # Tripo's model version: the model is compat.tripo.model, else the registry's pick
    face_limit: int | None = None
    model_seed: int | None = None
    texture: bool = True
    geometry_quality: str | None = None


class ImageToModel(GenerationOptions):
    input: str = Field(min_length=1)


class TextToModel(GenerationOptions):
    prompt: str = Field(min_length=1)
    negative_prompt: str | None = None  # no native model takes one


class MultiviewToModel(GenerationOptions):
    inputs: list[str | dict | None] = Field(min_length=1, max_length=4)  # front, left, back, right


class TexturePrompt(BaseModel):
    model_config = ConfigDict(extra="ignore")
    text: str | None = None
    image: str | None = None


class TextureModel(BaseModel):
    model_config = ConfigDict(extra="ignore")
    input: str = Field(min_length=1)
    model_seed: int | None = None
    texture_prompt: TexturePrompt | None = None


class Rig(BaseModel):
    model_config = ConfigDict(extra="ignore")
    input: str = Field(min_length=1)
    out_format: str = "glb"


class Segment(BaseModel):
    model_config = ConfigDict(extra="ignore")
    input: str = Field(min_length=1)


# -- from a Tripo request to a native one ------------------------------------------------------------------------

def _seed(value: int | None) -> int | None:
    return value % 2**32 if value is not None else None


def mesh_options(options: GenerationOptions) -> dict[str, Any]:
    faces = options.face_limit
    # face_limit <= 0 is Tripo's "no limit" (ComfyUI's nodes send -1 by default)
    return {"seed": _seed(options.model_seed), "texture": options.texture,
            "target_faces": min(max(faces, 100), 5_000_000) if faces is not None and faces > 0 else None,
            "quality": Quality.HIGH if options.geometry_quality == "detailed" else Quality.MEDIUM}


async def input_ref(request: Request, principal: Principal, value: str, role: str) -> str:
    """A Tripo ``input`` as a native input: a file token is a file id; a task id names that job's model (a mesh)
    or the image it made; a URL goes to the native submission, which fetches it only where inputs.allow_urls
    says so."""
    value = value.strip()
    if not value.startswith("job_"):
        return value
    job = await base.read_job(request, principal, value)
    if job is None:
        raise CompatError(404, f"task {value} not found", code=ErrorCode.JOB_NOT_FOUND)
    if role == "mesh":
        made = next((o.name for o in job.outputs if o.public and o.name.startswith("model.")), "model.glb")
        return f"{job.id}/{made}"
    image = made_image(job)
    if image is None:
        raise CompatError(400, f"task {job.id} made no image to start from", code=ErrorCode.INVALID_REQUEST,
                          hint="pass a file_token from POST /v3/files instead")
    return image


def made_image(job: JobRecord) -> str | None:
    """An image the job made that a new job can start from (a drawn view, a cut-out; not its renders), as a
    native input."""
    name = next((o.name for o in job.outputs if o.public and o.media_type.startswith("image/")
                 and o.name != "preview.png" and not o.name.startswith("view_")), None)
    return f"{job.id}/{name}" if name is not None else None


async def create(request: Request, principal: Principal, feature: Feature, native: _FeatureRequest,
                 flavour: str = "tripo") -> str:
    if native.model_preference is None:
        native.model_preference = base.pinned_model(base.node_of(request), flavour, feature)
    try:
        return await base.submit(request, principal, feature, native)
    except Pocket3DError as e:
        if e.code not in (ErrorCode.INPUT_URL_FORBIDDEN, ErrorCode.INPUT_URL_FAILED) or flavour != "tripo":
            raise
        # The native hint names the native upload; a Tripo client uploads its own way.
        allow = " (the server's operator can allow image URLs: inputs.allow_urls)" if "allow_urls" in (e.hint or "") \
            else ""
        raise CompatError(e.http_status, e.message, code=e.code, hint=UPLOAD_INSTEAD + allow) from None


# -- a native job as a Tripo task --------------------------------------------------------------------------------

def task_type(node: Any, job: JobRecord) -> str:
    if job.feature == Feature.TEXTURE_GENERATION:
        return "texture_model"
    if job.feature == Feature.AUTO_RIGGING:
        return "animate_rig"
    if job.feature == Feature.SEGMENTATION:
        return "mesh_segmentation"
    if job.request.get("text_prompt"):
        return "text_to_model"
    if job.input is not None:  # the request as sent: its images, or its named views
        images = len(job.input.get("images") or job.input.get("views") or ())
    else:  # a job from before requests were kept
        images = sum(1 for row in node.store.job_inputs(job.id) if row["role"] == "image")
    return "multiview_to_model" if images > 1 else "image_to_model"


def task_status(job: JobRecord) -> str:
    if job.status == JobStatus.SUCCEEDED:
        return "success" if job.outputs else "expired"
    return job.status.value  # queued, running, failed, cancelled: the same words


def task(request: Request, flavour: Flavour, job: JobRecord, *, model_key: str = "model_url",
         image_key: str = "rendered_image_url", queue_key: str = "queuing_num") -> dict[str, Any]:
    """The task as Tripo's clients read it; progress and times are integers."""
    node = base.node_of(request)
    status = task_status(job)
    output: dict[str, str] = {}
    if status == "success":
        expires = base.output_expiry(request, job)
        model = next((o.name for o in job.outputs if o.public and o.name.startswith("model.")), None)
        if model is not None:
            output[model_key] = base.signed_url(request, flavour, f"/outputs/{job.id}/{model}", expires)
        if base.public_output(job, "preview.png") is not None:
            output[image_key] = base.signed_url(request, flavour, f"/outputs/{job.id}/preview.png", expires)
    body: dict[str, Any] = {"task_id": job.id, "type": task_type(node, job), "status": status,
                            "progress": base.progress_percent(job), "input": {}, "output": output,
                            "create_time": int(job.created_at)}
    estimate = node.scheduler.estimate(job)
    if job.status == JobStatus.QUEUED and estimate.queue_position is not None:
        body[queue_key] = estimate.queue_position
    if estimate.eta_seconds is not None:
        body["running_left_time"] = int(estimate.eta_seconds)
    if job.status in (JobStatus.FAILED, JobStatus.CANCELLED):
        body["error_code"] = TASK_ERRORS.get(job.error_code, 3000) if job.error_code else 3000
        body["error_msg"] = base.job_error(request, job)
    return body


# -- routes -------------------------------------------------------------------------------------------------------

@router.post("/v3/files")
async def upload_file(request: Request) -> JSONResponse:
    principal = await base.principal_for(request, FLAVOUR)
    node = base.node_of(request)
    staged = await uploads.receive_upload(request, node.artifacts.tmp, int(node.settings.storage.max_file_size))
    stored = await run_in_threadpool(store_upload, node, principal.owner_id, staged)
    return envelope({"file_token": stored.file_id})


@router.post("/v3/files/presign")
async def presign(request: Request) -> JSONResponse:
    """A URL to PUT a large file to, without the key; its file_token names it once the PUT is done."""
    principal = await base.principal_for(request, FLAVOUR)
    base.parse(_Presign, await base.json_body(request))
    file_id = new_id("file")
    url = base.signed_url(request, FLAVOUR, f"/uploads/{file_id}", time.time() + UPLOAD_LINK_SECONDS,
                          op="put", owner=principal.owner_id)
    return envelope({"upload_url": url, "file_token": file_id, "expires_in": UPLOAD_LINK_SECONDS})


class _Presign(BaseModel):
    model_config = ConfigDict(extra="ignore")
    format: str = Field(min_length=1)


@router.put("/uploads/{file_id}")
async def put_upload(file_id: str, request: Request) -> Response:
    return await receive_put(request, file_id)


async def receive_put(request: Request, file_id: str) -> Response:
    """An upload to a signed URL: the owner the URL was made for gets the file under the id it named."""
    signed = base.check_signed(request)
    if signed.get("op") != "put" or not signed.get("owner"):
        raise CompatError(403, "this link is not for uploading")
    node = base.node_of(request)
    if node.store.get_file(file_id) is not None:
        raise CompatError(409, "this upload URL has been used already", code=ErrorCode.INVALID_REQUEST)
    staged = await uploads.receive_raw(request, node.artifacts.tmp, int(node.settings.storage.max_file_size))
    await run_in_threadpool(store_upload, node, signed["owner"], staged, file_id=file_id)
    return Response(status_code=200)


@router.post("/v3/generation/image-to-model")
async def image_to_model(request: Request) -> JSONResponse:
    principal = await base.principal_for(request, FLAVOUR)
    body = base.parse(ImageToModel, await base.json_body(request))
    image = await input_ref(request, principal, body.input, "image")
    job_id = await create(request, principal, Feature.MESH_GENERATION,
                          MeshGenerationRequest(images=[image], **mesh_options(body)))
    return envelope({"task_id": job_id})


@router.post("/v3/generation/text-to-model")
async def text_to_model(request: Request) -> JSONResponse:
    principal = await base.principal_for(request, FLAVOUR)
    body = base.parse(TextToModel, await base.json_body(request))
    job_id = await create(request, principal, Feature.MESH_GENERATION,
                          MeshGenerationRequest(text_prompt=body.prompt, **mesh_options(body)))
    return envelope({"task_id": job_id})


@router.post("/v3/generation/multiview-to-model")
async def multiview_to_model(request: Request) -> JSONResponse:
    principal = await base.principal_for(request, FLAVOUR)
    body = base.parse(MultiviewToModel, await base.json_body(request))
    refs = [(item.get("task_id") or item.get("file_token")) if isinstance(item, dict) else item
            for item in body.inputs]  # the SDK's {"task_id": ...} names a multiview-image task
    views = await named_views(request, principal, [str(r) if r else None for r in refs])
    job_id = await create(request, principal, Feature.MESH_GENERATION,
                          MeshGenerationRequest(views=views, **mesh_options(body)))
    return envelope({"task_id": job_id})


async def named_views(request: Request, principal: Principal, refs: list[str | None]) -> dict[str, str]:
    """Tripo's ``[front, left, back, right]`` (None: a view not given) as native named views."""
    if not refs or not refs[0]:
        raise CompatError(400, "the front view (the first input) is required", code=ErrorCode.INVALID_REQUEST)
    return {name: await input_ref(request, principal, ref, "image")
            for name, ref in zip(VIEW_ORDER, refs, strict=False) if ref}


@router.post("/v3/models/texture")
async def texture_model(request: Request) -> JSONResponse:
    principal = await base.principal_for(request, FLAVOUR)
    body = base.parse(TextureModel, await base.json_body(request))
    job_id = await create(request, principal, Feature.TEXTURE_GENERATION,
                          await texture_request(request, principal, body.input, body.texture_prompt, body.model_seed))
    return envelope({"task_id": job_id})


async def texture_request(request: Request, principal: Principal, source: str, prompt: TexturePrompt | None,
                          seed: int | None) -> TextureGenerationRequest:
    """Guided by the prompt's text or image; without one, by what guided the source task (as Tripo textures a
    model after its original image)."""
    mesh = await input_ref(request, principal, source, "mesh")
    text = prompt.text if prompt else None
    images = [await input_ref(request, principal, prompt.image, "image")] if prompt and prompt.image else []
    if not text and not images:
        source_job = await base.read_job(request, principal, source) if source.startswith("job_") else None
        if source_job is not None:
            text, images = source_guide(source_job)
        if not text and not images:
            raise CompatError(400, "give texture_prompt.text or texture_prompt.image to guide the texture",
                              code=ErrorCode.INVALID_REQUEST)
    return TextureGenerationRequest(mesh=mesh, text_prompt=text, images=images, seed=_seed(seed))


def source_guide(job: JobRecord) -> tuple[str | None, list[str]]:
    """What a task was made from: its prompt; else the image it made from its input (the cut-out); else the
    image it was given, while that is still stored (a data: URI is not kept whole in the request's echo)."""
    if job.request.get("text_prompt"):
        return job.request["text_prompt"], []
    made = made_image(job)
    if made is not None:
        return None, [made]
    given = job.input or {}
    first = (given.get("images") or [None])[0] or (given.get("views") or {}).get("front")
    return None, [first] if isinstance(first, str) and not first.startswith("data:") else []


@router.post("/v3/animations/rig")
async def rig(request: Request) -> JSONResponse:
    principal = await base.principal_for(request, FLAVOUR)
    body = base.parse(Rig, await base.json_body(request))
    mesh = await input_ref(request, principal, body.input, "mesh")
    job_id = await create(request, principal, Feature.AUTO_RIGGING,
                          RiggingRequest(mesh=mesh, output_format=body.out_format.lower()))
    return envelope({"task_id": job_id})


@router.post("/v3/mesh/segment")
async def segment(request: Request) -> JSONResponse:
    principal = await base.principal_for(request, FLAVOUR)
    body = base.parse(Segment, await base.json_body(request))
    mesh = await input_ref(request, principal, body.input, "mesh")
    job_id = await create(request, principal, Feature.SEGMENTATION, SegmentationRequest(mesh=mesh))
    return envelope({"task_id": job_id})


@router.get("/v3/tasks/{task_id}")
async def get_task(task_id: str, request: Request) -> JSONResponse:
    principal = await base.principal_for(request, FLAVOUR)
    job = await base.read_job(request, principal, task_id)
    if job is None:
        raise CompatError(404, f"task {task_id} not found", code=ErrorCode.JOB_NOT_FOUND,
                          hint="a task_id is what the create call answered")
    return envelope(task(request, FLAVOUR, job))


class _TaskList(BaseModel):
    model_config = ConfigDict(extra="ignore")
    task_ids: list[str] = Field(min_length=1, max_length=100)


@router.post("/v3/tasks/list")
async def list_tasks(request: Request) -> JSONResponse:
    principal = await base.principal_for(request, FLAVOUR)
    body = base.parse(_TaskList, await base.json_body(request))
    tasks: dict[str, Any] = {}
    missed: list[str] = []
    for task_id in body.task_ids:
        job = await base.read_job(request, principal, task_id)
        if job is None:
            missed.append(task_id)
        else:
            tasks[task_id] = task(request, FLAVOUR, job)
    return envelope({"tasks": tasks, "missed": missed})


@router.get("/v3/account/balance")
async def balance(request: Request) -> JSONResponse:
    await base.principal_for(request, FLAVOUR)
    return envelope(BALANCE)


@router.get("/outputs/{job_id}/{name}")
async def output(job_id: str, name: str, request: Request) -> Response:
    return await signed_output(request, job_id, name)


async def signed_output(request: Request, job_id: str, name: str) -> Response:
    """A task's result at its signed URL: no key, the signature instead; 404 once it expired."""
    base.check_signed(request)
    job = await base.snapshot(request, job_id)
    if job is None:
        raise CompatError(404, f"task {job_id} not found", code=ErrorCode.JOB_NOT_FOUND)
    return base.output_response(request, job, name, CompatError(404, f"{name} of task {job_id} has expired",
                                                                code=ErrorCode.OUTPUT_EXPIRED))



@router.api_route("/v3/{rest:path}", methods=["GET", "POST", "PUT", "DELETE"])
async def not_served(rest: str, request: Request) -> Response:
    """Tripo routes pocket3d has no model for (text-to-image, retarget, convert, ...): the SDK's error, saying so."""
    await base.principal_for(request, FLAVOUR)
    raise CompatError(404, f"{request.method} /v3/{rest} is not served by this server (pocket3d)",
                      code=ErrorCode.NOT_FOUND, hint="README: Drop-in compatibility lists what the Tripo flavour "
                      "serves")
