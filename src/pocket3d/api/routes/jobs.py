from __future__ import annotations

import asyncio
import json
import re
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Body, Header, Path, Query, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from sse_starlette import EventSourceResponse
from starlette.concurrency import run_in_threadpool

from pocket3d.api import downloads, examples, keys, redact
from pocket3d.api.deps import NodeDep, PrincipalDep
from pocket3d.api.inputs import visible_job
from pocket3d.api.keys import Principal
from pocket3d.api.openapi import error_responses
from pocket3d.api.routes.features import SUBMIT_RESPONSES, IdempotencyKeyHeader, WaitQuery, answer, check_key
from pocket3d.api.schemas import (
    ConvertRequest,
    DeliveryAttemptView,
    DeliveryList,
    DeliveryView,
    JobFeature,
    JobPage,
    JobView,
    iso,
)
from pocket3d.api.submission import submit_conversion
from pocket3d.api.views import download_filename, job_view
from pocket3d.errors import ErrorCode, Pocket3DError
from pocket3d.jobs import outbox, transitions
from pocket3d.jobs.events import Closing
from pocket3d.jobs.records import JobRecord, JobStatus
from pocket3d.node import Node

router = APIRouter(tags=["Jobs"])
T = TypeVar("T")
NOT_FOUND = error_responses(401, 404)
JobIdPath = Annotated[str, Path(description="the job_id its submission answered", examples=["job_01JD8X4T0M5Q3V7W9Y2B6C8E1F"])]


async def _read(node: Node, fn: Callable[..., T], *args: Any) -> T:
    """Run a short read. On SQLite it runs inline: a local read of ~0.1 ms costs less than a thread hop, and
    many threads doing short SQLite calls mostly contend for the GIL (measured: bench/api_overhead.py). A
    networked database is read from the threadpool, so the event loop never waits on the network."""
    if node.store.is_sqlite:
        return fn(*args)
    return await run_in_threadpool(fn, *args)


def _shown(principal: Principal, job: JobRecord) -> JobRecord:
    """The job as this caller may see it: server paths in its messages are for admins only."""
    return job if principal.is_admin else redact.job(job)


def _visible_job(node: Node, principal: Principal, job_id: str) -> JobRecord:
    return _shown(principal, visible_job(node, principal, job_id))


def _view(node: Node, job: JobRecord) -> JobView:
    return job_view(job, node.scheduler.estimate(job))


_rendered: OrderedDict[tuple, bytes] = OrderedDict()
_rendered_lock = threading.Lock()  # reads run in threads on a networked database
_RENDERED_MAX = 4096


def _job_json(node: Node, principal: Principal, job_id: str) -> Response:
    """A job's status as JSON bytes, rendered once per (job version, estimate): clients poll far more often than
    jobs change. Returned as a Response, because FastAPI would validate a returned model a second time."""
    job = _visible_job(node, principal, job_id)
    estimate = node.scheduler.estimate(job)
    key = (job.id, job.version, estimate, principal.is_admin)
    body = _rendered.get(key)
    if body is None:
        body = job_view(job, estimate).model_dump_json().encode()
        with _rendered_lock:
            _rendered[key] = body
            while len(_rendered) > _RENDERED_MAX:
                _rendered.popitem(last=False)
    return Response(body, media_type="application/json")


@router.get("/jobs", response_model=JobPage, responses=error_responses(401, 422), operation_id="listJobs",
            summary="Your jobs, newest first")
def list_jobs(node: NodeDep, principal: PrincipalDep,
              status: Annotated[JobStatus | None, Query(description="only jobs in this state")] = None,
              feature: Annotated[JobFeature | None, Query(description="only jobs of this feature")] = None,
              cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
              limit: Annotated[int, Query(ge=1, le=100)] = 20) -> JobPage:
    """Your jobs (an admin key sees everyone's), newest first, a page at a time: pass `next_cursor` as `cursor`
    for the next page; it is null on the last."""
    owner = None if principal.is_admin else principal.owner_id
    jobs = node.store.list_jobs(owner, status=status.value if status else None,
                                feature=feature.value if feature else None, before_id=cursor, limit=limit + 1)
    page = jobs[:limit]
    return JobPage(jobs=[_view(node, _shown(principal, j)) for j in page],
                   next_cursor=page[-1].id if len(jobs) > limit else None)


@router.get("/jobs/{job_id}", response_model=JobView, responses=NOT_FOUND, operation_id="getJob",
            summary="Status, progress and outputs")
async def get_job(job_id: JobIdPath, node: NodeDep, principal: PrincipalDep) -> Response:
    """The job as it is now: status, progress (0-100), the current stage, queue position and ETA while it waits,
    the error when it failed, and the outputs with their download URLs when it succeeded."""
    return await _read(node, _job_json, node, principal, job_id)


@router.get("/mesh/status/{job_id}", response_model=JobView, responses=NOT_FOUND, tags=["Mesh Generation"],
            operation_id="getMeshJobStatus", summary="The same as GET /jobs/{job_id}")
async def mesh_status(job_id: JobIdPath, node: NodeDep, principal: PrincipalDep) -> Response:
    """The same answer as `GET /api/v1/jobs/{job_id}`, at the path clients of mesh-generation APIs often poll."""
    return await _read(node, _job_json, node, principal, job_id)


@router.post("/jobs/{job_id}/cancel", response_model=JobView, responses=error_responses(401, 404, 409),
             operation_id="cancelJob", summary="Cancel: a waiting job at once, a running one at its next progress "
             "report")
def cancel_job(job_id: JobIdPath, node: NodeDep, principal: PrincipalDep) -> JobView:
    """Cancel a job that has not ended. A queued job is cancelled at once; a running one stops at its model's
    next progress report (its stage is killed after `scheduler.cancel_grace` seconds). Cancelling a cancelled job
    again is allowed; a job that succeeded or failed answers 409."""
    _visible_job(node, principal, job_id)
    status = transitions.cancel_job(node.store, job_id, release=node.release, now=time.time())
    if status == JobStatus.RUNNING:
        node.scheduler.cancel(job_id)
    return _view(node, _visible_job(node, principal, job_id))


@router.post("/jobs/{job_id}/convert", status_code=202, responses=SUBMIT_RESPONSES, operation_id="convertJob",
             summary="A succeeded job's result in other formats, without running the model again")
async def convert_job(job_id: JobIdPath,
                      req: Annotated[ConvertRequest, Body(openapi_examples=examples.conversion())],
                      node: NodeDep, principal: PrincipalDep, wait: WaitQuery = 0,
                      idempotency_key: IdempotencyKeyHeader = None) -> JSONResponse:
    """Makes a new job that writes the job's result in the asked formats, from the mesh its model made (with the
    same decimation), and answers like a submit: 202 with the new job's links, or the finished job with `?wait`.
    The new job's outputs are its own (`model.fbx`, …) and expire with it; the source job is left as it is. The
    formats are those of the job's feature (a rig: glb, fbx). Works while the source job's outputs are kept."""
    submitted = await run_in_threadpool(submit_conversion, node, principal, job_id, req, check_key(idempotency_key))
    return await answer(node, principal, submitted, wait)


EXPIRED_HINT = "outputs are kept for the job's expires_at; submit the job again to make them anew"
_RANGE = re.compile(r"^bytes=\s*(\d*)-(\d*)\s*(,\s*\d*-\d*\s*)*$")


def _check_range(request: Request, size: int) -> None:
    """Refuse an unsatisfiable Range in the API's error format; ignore a malformed one (RFC 9110 14.2), which
    Starlette would otherwise answer with a plain-text 400."""
    value = request.headers.get("range")
    if value is None:
        return
    m = _RANGE.match(value)
    if m is None or (m.group(1) and m.group(2) and int(m.group(1)) > int(m.group(2))) or not (m.group(1) or m.group(2)):
        request.scope["headers"] = [(k, v) for k, v in request.scope["headers"] if k != b"range"]
        return
    if m.group(1) and int(m.group(1)) >= size:
        raise Pocket3DError(ErrorCode.RANGE_NOT_SATISFIABLE, f"the range starts past the end ({size} bytes)",
                            {"size": size}, headers={"Content-Range": f"bytes */{size}"})


_FILE = {"schema": {"type": "string", "format": "binary"}}
DOWNLOAD_RESPONSES = {
    200: {"description": "the file; its media type is the output's media_type",
          "content": {media: _FILE for media in ("model/gltf-binary", "application/zip", "model/vnd.usdz+zip",
                                                 "application/octet-stream", "application/ply", "model/stl",
                                                 "application/json", "image/png")},
          "headers": {"ETag": {"description": "the file's sha256, quoted", "schema": {"type": "string"}}}},
    206: {"description": "the part a Range header asked for", "content": {"application/octet-stream": _FILE}},
    304: {"description": "not modified: the If-None-Match ETag is the file's"},
    307: {"description": "a presigned URL of the S3 store (storage.s3.downloads: redirect); ETag as for 200"},
    **error_responses(401, 404, 410, 416, 503)}


@router.get("/jobs/{job_id}/outputs/{name}", responses=DOWNLOAD_RESPONSES, response_class=FileResponse,
            operation_id="downloadJobOutput", summary="Download an output (supports Range and If-None-Match)")
def download_output(job_id: JobIdPath,
                    name: Annotated[str, Path(description="an output's name, as the job lists it",
                                              examples=["model.glb"])],
                    request: Request, node: NodeDep, principal: PrincipalDep,
                    if_none_match: Annotated[str | None, Header()] = None) -> Response:
    """Download one output of a succeeded job (`outputs[].url` in the job). Resumable: `Range` is honoured, and
    `If-None-Match` with the ETag answers 304. Outputs are deleted at the job's `expires_at` (then 410)."""
    job = _visible_job(node, principal, job_id)
    if job.status != JobStatus.SUCCEEDED:
        raise Pocket3DError(ErrorCode.OUTPUT_NOT_FOUND, f"job {job_id} is {job.status.value}; outputs exist "
                            "once it has succeeded", {"status": job.status.value},
                            hint=f"wait for status succeeded: poll GET /api/v1/jobs/{job_id} or follow "
                            f"/api/v1/jobs/{job_id}/events" if not job.status.is_final else
                            f"the job did not succeed: GET /api/v1/jobs/{job_id} says why (error)")
    if not job.outputs:
        raise Pocket3DError(ErrorCode.OUTPUT_EXPIRED, f"the outputs of job {job_id} have expired and were deleted",
                            hint=EXPIRED_HINT)
    output = next((o for o in job.outputs if o.public and o.name == name), None)
    if output is None:
        names = [o.name for o in job.outputs if o.public]
        raise Pocket3DError(ErrorCode.OUTPUT_NOT_FOUND, f"job {job_id} has no output {name!r}", {"outputs": names},
                            hint=f"its outputs are {', '.join(names)} (outputs[].url in the job)")
    etag = f'"{output.sha256}"'
    if if_none_match and etag in [t.strip() for t in if_none_match.split(",")]:
        return Response(status_code=304, headers={"ETag": etag})
    _check_range(request, output.size)
    return downloads.artifact_response(
        node.artifacts, request, sha256=output.sha256, size=output.size, media_type=output.media_type,
        filename=download_filename(job, output), headers={"ETag": etag, "Cache-Control": "private, max-age=3600"},
        missing=Pocket3DError(ErrorCode.OUTPUT_EXPIRED, f"output {name!r} of job {job_id} is no longer stored",
                              hint=EXPIRED_HINT))


EVENTS_RESPONSES = {
    200: {"description": "`text/event-stream`: an event per change until the job ends, then the stream closes. "
                         "`event` is `status` (the status or stage changed) or `progress`; `data` is the job as "
                         "GET /jobs/{job_id} shows it; `id` is the job's version, for `Last-Event-ID`. A server that is "
                         "stopping ends the stream with `event: reconnect` and a `retry` hint: reconnect with "
                         "`Last-Event-ID` (another gateway answers) to go on where it left off.",
          "content": {"text/event-stream": {"schema": {"type": "string"}, "example": (
              'event: status\nid: 3\ndata: {"job_id": "job_01JD8X4T0M5Q3V7W9Y2B6C8E1F", "status": "running", '
              '"progress": 12.5, …}\n\n')}}},
    **NOT_FOUND}


KEY_RECHECK_SECONDS = 2.0  # an open stream notices a revoked key within this long
RECONNECT_MS = 1000  # what a stream closed by a stopping server tells the client to wait before reconnecting


async def _while_key_is_valid(node: Node, principal: Principal,
                              stream: AsyncIterator[JobRecord]) -> AsyncIterator[JobRecord | None]:
    """The stream's items while the caller's key stays valid (checked every KEY_RECHECK_SECONDS, and before each
    item); then one None, and the stream ends."""
    if principal.key_id is None:  # auth off: nothing to revoke
        async for item in stream:
            yield item
        return
    iterator = aiter(stream)
    checked = time.monotonic()
    pending: asyncio.Task | None = None
    try:
        while True:
            if pending is None:
                pending = asyncio.ensure_future(anext(iterator))
            done, _ = await asyncio.wait({pending}, timeout=KEY_RECHECK_SECONDS)
            if time.monotonic() - checked >= KEY_RECHECK_SECONDS or done:
                if not await run_in_threadpool(keys.is_active, node.store, principal.key_id):
                    yield None
                    return
                checked = time.monotonic()
            if not done:
                continue
            try:
                item = pending.result()
            except StopAsyncIteration:
                return
            pending = None
            yield item
    finally:
        if pending is not None:
            pending.cancel()


@router.get("/jobs/{job_id}/events", responses=EVENTS_RESPONSES, response_class=EventSourceResponse,
            operation_id="streamJobEvents", summary="Server-Sent Events: every status and progress change, until a "
            "final state")
async def job_events(job_id: JobIdPath, request: Request, node: NodeDep, principal: PrincipalDep,
                     last_event_id: Annotated[str | None, Header(description="resume after this event id")] = None
                     ) -> EventSourceResponse:
    """Follow a job without polling: `curl -N …/events`. Reconnecting with `Last-Event-ID` sends only what
    changed since; a job that has already ended sends its final state at once."""
    await run_in_threadpool(_visible_job, node, principal, job_id)
    after = int(last_event_id) if last_event_id and last_event_id.isascii() and last_event_id.isdigit() else 0

    async def events() -> AsyncIterator[dict]:
        last_status = None
        node.metrics.sse_streams.inc()
        try:
            async for job in _while_key_is_valid(node, principal, node.bus.follow(job_id, after_version=after)):
                if job is None:  # the key was revoked while the stream was open
                    yield {"event": "error", "data": json.dumps({"error_code": ErrorCode.UNAUTHORIZED.value,
                                                                 "message": "the API key was revoked"})}
                    return
                view = await run_in_threadpool(_view, node, _shown(principal, job))
                kind = "status" if (job.status, job.current_stage) != last_status else "progress"
                last_status = (job.status, job.current_stage)
                yield {"event": kind, "id": str(job.version), "data": view.model_dump_json()}
        except Closing:  # the server is stopping: the client reconnects, to another gateway, where it left off
            yield {"event": "reconnect", "retry": RECONNECT_MS,
                   "data": json.dumps({"message": "the server is stopping; reconnect with Last-Event-ID to go on",
                                       "retry_ms": RECONNECT_MS})}
        finally:
            node.metrics.sse_streams.dec()

    # The grace period lets a stream send its reconnect event when the server stops (node.bus.close ends it).
    return EventSourceResponse(events(), ping=15, send_timeout=30, shutdown_grace_period=2)


@router.get("/jobs/{job_id}/deliveries", response_model=DeliveryList, responses=NOT_FOUND, tags=["Webhooks"],
            operation_id="listJobDeliveries", summary="The job's webhook deliveries and every attempt of each")
def job_deliveries(job_id: JobIdPath, node: NodeDep, principal: PrincipalDep) -> DeliveryList:
    """One delivery a message to one URL (the request's `webhook_url`, or a registered endpoint), oldest first,
    each with its attempts: the receiver's status code, or why no answer came (a timeout, a refused address, a
    connection error). A delivery is retried with backoff for `webhooks.retry_for` (24 h), then `failed`."""
    _visible_job(node, principal, job_id)
    return DeliveryList(deliveries=[
        DeliveryView(id=d.id, event=d.event, url=d.url, endpoint_id=d.endpoint_id, status=d.status.value,
                     attempts=[DeliveryAttemptView(at=iso(a.started_at), seconds=round(a.seconds, 3),
                                                   status_code=a.status_code, error=a.error) for a in d.history],
                     next_attempt_at=iso(d.next_attempt_at), created_at=iso(d.created_at),
                     finished_at=iso(d.finished_at))
        for d in outbox.deliveries_of_job(node.store, job_id)])
