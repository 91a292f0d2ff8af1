"""ProtoScale-AI's backend (seed 001) at ``/compat/protoscale``, for its Vue app (built with ``VITE_API_URL``):
upload, then (flow A) four views, then the 3D model, polled once a second.

The app's "job" is a session (``pocket3d.jobs.sessions``): the upload and its options, and the native job each
step made. The views are four renders of the generated mesh (``view_renders``); the 3D step reuses that mesh when
the views' job made one. The app runs on another origin: list it in ``server.cors_origins`` (every answer, errors
included, then carries ``Access-Control-Allow-Origin``). Results are fetched by session id, without credentials,
as the original served them.
"""

from __future__ import annotations

import time

from fastapi import Request, Response
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from pocket3d.api import redact, uploads
from pocket3d.api.compat import base
from pocket3d.api.compat.base import CompatError
from pocket3d.api.keys import Principal
from pocket3d.api.routes.files import store_upload
from pocket3d.api.schemas import MeshGenerationRequest, Quality, iso
from pocket3d.errors import Pocket3DError
from pocket3d.jobs import sessions
from pocket3d.jobs.records import JobRecord, JobStatus
from pocket3d.models.spec import Feature

PREFERRED = ("hunyuan3d-2.1", "hunyuan3d-2")  # the original backend ran Hunyuan3D-2.1
VIEWS, MODEL = "multiview", "3d_generation"  # the steps, as the app's status names them
VIEW_NAMES = tuple(f"view_{i}.png" for i in range(4))


def _error(request: Request, e: CompatError) -> Response:
    return JSONResponse({"detail": e.message}, status_code=e.status, headers=e.headers)


FLAVOUR = base.Flavour("protoscale", _error)
router = FLAVOUR.router()


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("true", "1", "yes", "on")


@router.post("/api/upload")
async def upload(request: Request) -> JSONResponse:
    principal = await base.principal_for(request, FLAVOUR)
    node = base.node_of(request)
    staged = await uploads.receive_upload(request, node.artifacts.tmp, int(node.settings.storage.max_file_size))
    options = {"remove_bg": _truthy(staged.fields.get("remove_bg")),
               "enhanced_detail": _truthy(staged.fields.get("enhanced_detail"))}
    try:
        stored = await run_in_threadpool(store_upload, node, principal.owner_id, staged)
    except Pocket3DError as e:
        raise CompatError(400, f"not an image: {e.message}") from None
    if stored.kind != "image":
        raise CompatError(400, f"not an image: this is a {stored.format} mesh")
    now = time.time()
    session_id = await run_in_threadpool(
        lambda: sessions.create(node.store, flavour="protoscale", owner_id=principal.owner_id, file_id=stored.file_id,
                                options=options, now=now, prefix="ps",
                                expires_at=now + node.settings.storage.file_lifetime
                                + node.settings.storage.cleanup_after))
    return JSONResponse({"job_id": session_id})


async def _session(request: Request, job_id: str) -> tuple[Principal, sessions.Session]:
    principal = await base.principal_for(request, FLAVOUR)
    node = base.node_of(request)
    found = await run_in_threadpool(lambda: sessions.get(node.store, job_id, flavour="protoscale", now=time.time()))
    if found is None or not principal.can_see(found.owner_id):
        raise CompatError(404, "Job not found")
    return principal, found


async def _start(request: Request, principal: Principal, session: sessions.Session, step: str) -> JSONResponse:
    """Submit ``step``'s job and record it before answering, so the next poll already reads ``processing``. A
    refused step is recorded too: the app ignores this answer, and reads ``failed`` with the reason instead."""
    node = base.node_of(request)
    reuse = session.jobs.get(VIEWS) if step == MODEL else None
    if reuse is not None:
        views_job = await base.read_job(request, principal, reuse)
        usable = (JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.SUCCEEDED)
        reuse = reuse if views_job is not None and views_job.status in usable else None
    try:
        if reuse is not None:
            job_id = reuse  # the views' job makes (or made) the mesh: the 3D step is that mesh
        else:
            model_id = await run_in_threadpool(base.choose_model, node, "protoscale", Feature.MESH_GENERATION,
                                               {"image"}, images=1, preferred=PREFERRED)
            quality = Quality.HIGH if session.options.get("enhanced_detail") else Quality.MEDIUM
            job_id = await base.submit(request, principal, Feature.MESH_GENERATION, MeshGenerationRequest(
                images=[session.file_id], model_preference=model_id, quality=quality, view_renders=step == VIEWS))
    except Pocket3DError as e:
        message = e.message if redact.sees_everything(request) else redact.text(e.message)
        await run_in_threadpool(sessions.refuse_step, node.store, session.id, step, message)
        raise CompatError(e.http_status, message) from None
    await run_in_threadpool(sessions.start_step, node.store, session.id, step, job_id)
    return JSONResponse({"job_id": session.id, "status": "processing"})


@router.post("/api/jobs/{job_id}/generate-multiangle")
async def generate_views(job_id: str, request: Request) -> JSONResponse:
    principal, session = await _session(request, job_id)
    return await _start(request, principal, session, VIEWS)


@router.post("/api/jobs/{job_id}/generate-3d")
async def generate_model(job_id: str, request: Request) -> JSONResponse:
    principal, session = await _session(request, job_id)
    return await _start(request, principal, session, MODEL)


@router.get("/api/jobs/{job_id}/status")
async def status(job_id: str, request: Request) -> JSONResponse:
    principal, session = await _session(request, job_id)
    # Exactly these keys, progress an integer.
    body: dict = {"job_id": session.id, "status": "pending", "progress": 0, "stage": session.step, "error": None}
    if session.error is not None:
        return JSONResponse({**body, "status": "failed", "error": session.error})
    job = await base.read_job(request, principal, session.jobs[session.step]) if session.step else None
    if job is None:
        return JSONResponse(body)
    if job.status == JobStatus.SUCCEEDED:
        return JSONResponse({**body, "status": "completed", "progress": 100})
    if job.status.is_final:
        return JSONResponse({**body, "status": "failed", "progress": base.progress_percent(job),
                             "error": base.job_error(request, job)})
    return JSONResponse({**body, "status": "processing", "progress": base.progress_percent(job)})


async def _job_of(request: Request, principal: Principal, session: sessions.Session, step: str) -> JobRecord | None:
    job_id = session.jobs.get(step)
    return await base.read_job(request, principal, job_id) if job_id else None


@router.get("/api/jobs/{job_id}/result/{asset}")
async def result(job_id: str, asset: str, request: Request) -> Response:
    principal, session = await _session(request, job_id)
    if asset in VIEW_NAMES:
        job = await _job_of(request, principal, session, VIEWS)
        missing = CompatError(404, "View not ready")
    elif asset == "model.glb":
        job = await _job_of(request, principal, session, MODEL)
        missing = CompatError(404, "Model not ready")
    else:
        raise CompatError(400, f"Invalid asset {asset!r}: view_0.png to view_3.png or model.glb")
    if job is None:
        raise missing
    return base.output_response(request, job, asset, missing)


@router.get("/api/jobs/{job_id}/thumbnail")
async def thumbnail(job_id: str, request: Request) -> Response:
    principal, session = await _session(request, job_id)
    job = await _job_of(request, principal, session, MODEL) or await _job_of(request, principal, session, VIEWS)
    missing = CompatError(404, "Thumbnail not ready")
    if job is None:
        raise missing
    return base.output_response(request, job, "preview.png", missing)


@router.get("/api/jobs")
async def history(request: Request) -> JSONResponse:
    principal = await base.principal_for(request, FLAVOUR)
    node = base.node_of(request)
    owner = None if principal.is_admin else principal.owner_id
    found = await run_in_threadpool(
        lambda: sessions.list_for(node.store, flavour="protoscale", owner_id=owner, now=time.time()))
    # Only the sessions with a model, as the original listed them: the app shows each as a model to open.
    items = []
    for session in found:
        job = await _job_of(request, principal, session, MODEL)
        if job is not None and job.status == JobStatus.SUCCEEDED and base.public_output(job, "model.glb"):
            items.append({"job_id": session.id, "has_model": True, "created_at": iso(session.created_at)})
    return JSONResponse(items)


@router.get("/health")
async def health() -> JSONResponse:
    return JSONResponse({"status": "ok"})
