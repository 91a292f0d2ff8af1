"""ComfyUI's API nodes at ``/compat/comfy/`` (``--comfy-api-base http://host:port/compat/comfy/``, the trailing slash
required): the storage the nodes upload their images to, and the Tripo v2 proxy ``TripoImageToModelNode`` and its
siblings call. The translation is Tripo's (``compat.tripo``); the answers are v2's: ``output.pbr_model`` and
``output.rendered_image``.

1. ``POST /customers/storage`` gives a signed URL to PUT the image to (no key) and a signed URL to read it back;
2. the task names that URL as ``file.url``: it is resolved to the stored file here, never fetched;
3. the node polls ``GET /proxy/tripo/v2/openapi/task/{id}`` and downloads ``pbr_model`` without a key.
"""

from __future__ import annotations

import re
import time
from typing import Any
from urllib.parse import urlsplit

from fastapi import Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from pocket3d.api import downloads
from pocket3d.api.compat import base, tripo
from pocket3d.api.compat.base import CompatError, Flavour
from pocket3d.api.keys import Principal
from pocket3d.api.schemas import MeshGenerationRequest, RiggingRequest, SegmentationRequest
from pocket3d.errors import ErrorCode, Pocket3DError
from pocket3d.jobs.store import new_id
from pocket3d.models.spec import Feature

UPLOAD_LINK_SECONDS = 3600
_STORED = re.compile(r"/storage/(file_[0-9A-Za-z]+)$")


def _error(request: Request, e: CompatError) -> Response:
    # ComfyUI's error model requires a suggestion
    return JSONResponse({**tripo.error_body(e), "suggestion": e.hint or ""}, status_code=e.status, headers=e.headers)


FLAVOUR = Flavour("comfy", _error)
router = FLAVOUR.router()


class _Storage(BaseModel):
    model_config = ConfigDict(extra="ignore")
    file_name: str = Field(min_length=1, max_length=255)


@router.post("/customers/storage")
async def storage(request: Request) -> JSONResponse:
    principal = await base.principal_for(request, FLAVOUR)
    base.parse(_Storage, await base.json_body(request))
    file_id = new_id("file")
    lifetime = base.node_of(request).settings.storage.file_lifetime
    now = time.time()
    return JSONResponse({
        "upload_url": base.signed_url(request, FLAVOUR, f"/storage/{file_id}", now + UPLOAD_LINK_SECONDS,
                                      op="put", owner=principal.owner_id),
        "download_url": base.signed_url(request, FLAVOUR, f"/storage/{file_id}", now + lifetime, op="get")})


@router.put("/storage/{file_id}")
async def put_storage(file_id: str, request: Request) -> Response:
    return await tripo.receive_put(request, file_id)


@router.get("/storage/{file_id}")
async def get_storage(file_id: str, request: Request) -> Response:
    """The uploaded file at its signed download URL."""
    signed = base.check_signed(request)
    if signed.get("op") != "get":
        raise CompatError(403, "this link is for uploading, not reading")
    node = base.node_of(request)
    record = node.store.get_file(file_id)
    if record is None:
        raise CompatError(404, f"file {file_id} not found", code=ErrorCode.FILE_NOT_FOUND)
    return downloads.artifact_response(
        node.artifacts, request, sha256=record.sha256, size=record.size, media_type=record.media_type,
        filename=record.filename or file_id, headers={"ETag": f'"{record.sha256}"'}, redirect=False,
        missing=Pocket3DError(ErrorCode.FILE_NOT_FOUND, f"file {file_id} is no longer stored"))


class _Task(BaseModel):
    """Tripo v2's task body, as ComfyUI's nodes send it; options pocket3d has no use for are ignored."""

    model_config = ConfigDict(extra="ignore")
    type: str
    file: dict[str, Any] | None = None
    files: list[dict[str, Any] | None] | None = None
    prompt: str | None = None
    original_model_task_id: str | None = None
    texture_prompt: tripo.TexturePrompt | dict[str, Any] | None = None
    model_seed: int | None = None
    face_limit: int | None = None
    texture: bool = True
    geometry_quality: str | None = None
    out_format: str = "glb"


def _file_ref(reference: dict[str, Any] | None) -> str | None:
    """``{"type", "url"}`` naming this server's storage (resolved to the upload, never fetched), another URL
    (fetched only where inputs.allow_urls), or ``{"file_token"}``; ``{}`` is a missing view."""
    if not reference:
        return None
    if reference.get("file_token"):
        return str(reference["file_token"])
    url = str(reference.get("url") or "")
    stored = _STORED.search(urlsplit(url).path)
    if stored is not None:
        return stored.group(1)
    if url:
        return url
    raise CompatError(400, "a file reference needs url or file_token", code=ErrorCode.INVALID_REQUEST)


async def _native(request: Request, principal: Principal, body: _Task) -> tuple[Feature, Any]:
    options = tripo.mesh_options(tripo.GenerationOptions(**body.model_dump(include={"face_limit", "model_seed", "texture",
                                                                           "geometry_quality"})))
    if body.type == "text_to_model":
        if not body.prompt:
            raise CompatError(400, "prompt is required", code=ErrorCode.INVALID_REQUEST)
        return Feature.MESH_GENERATION, MeshGenerationRequest(text_prompt=body.prompt, **options)
    if body.type == "image_to_model":
        ref = _file_ref(body.file)
        if ref is None:
            raise CompatError(400, "file is required", code=ErrorCode.INVALID_REQUEST)
        image = await tripo.input_ref(request, principal, ref, "image")
        return Feature.MESH_GENERATION, MeshGenerationRequest(images=[image], **options)
    if body.type == "multiview_to_model":  # files: front, left, back, right; {} for a view not given
        views = await tripo.named_views(request, principal, [_file_ref(r) for r in body.files or []])
        return Feature.MESH_GENERATION, MeshGenerationRequest(views=views, **options)
    source = body.original_model_task_id
    if not source:
        raise CompatError(400, f"{body.type}: original_model_task_id is required", code=ErrorCode.INVALID_REQUEST)
    if body.type == "texture_model":
        prompt = body.texture_prompt if isinstance(body.texture_prompt, tripo.TexturePrompt) else None
        return Feature.TEXTURE_GENERATION, await tripo.texture_request(request, principal, source, prompt,
                                                                       body.model_seed)
    mesh = await tripo.input_ref(request, principal, source, "mesh")
    if body.type == "animate_rig":
        return Feature.AUTO_RIGGING, RiggingRequest(mesh=mesh, output_format=body.out_format.lower())
    if body.type == "mesh_segmentation":
        return Feature.SEGMENTATION, SegmentationRequest(mesh=mesh)
    raise CompatError(400, f"task type {body.type!r} is not served here", code=ErrorCode.INVALID_REQUEST,
                      hint="image_to_model, text_to_model, multiview_to_model, texture_model, animate_rig and "
                      "mesh_segmentation are")


@router.post("/proxy/tripo/v2/openapi/task")
async def create_task(request: Request) -> JSONResponse:
    principal = await base.principal_for(request, FLAVOUR)
    body = base.parse(_Task, await base.json_body(request))
    feature, native = await _native(request, principal, body)
    job_id = await tripo.create(request, principal, feature, native, flavour="comfy")
    return tripo.envelope({"task_id": job_id})


@router.get("/proxy/tripo/v2/openapi/task/{task_id}")
async def get_task(task_id: str, request: Request) -> JSONResponse:
    principal = await base.principal_for(request, FLAVOUR)
    job = await base.read_job(request, principal, task_id)
    if job is None:
        raise CompatError(404, f"task {task_id} not found", code=ErrorCode.JOB_NOT_FOUND)
    return tripo.envelope(tripo.task(request, FLAVOUR, job, model_key="pbr_model", image_key="rendered_image",
                                     queue_key="queue_position"))


@router.get("/outputs/{job_id}/{name}")
async def output(job_id: str, name: str, request: Request) -> Response:
    return await tripo.signed_output(request, job_id, name)
