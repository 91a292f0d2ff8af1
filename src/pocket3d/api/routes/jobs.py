from __future__ import annotations

import re
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import FileResponse, Response
from sse_starlette import EventSourceResponse
from starlette.concurrency import run_in_threadpool

from pocket3d.api.deps import NodeDep, PrincipalDep
from pocket3d.api.keys import Principal
from pocket3d.api.schemas import ErrorBody, JobPage, JobView
from pocket3d.api.views import job_view
from pocket3d.errors import ErrorCode, Pocket3DError
from pocket3d.jobs import transitions
from pocket3d.jobs.records import JobRecord, JobStatus
from pocket3d.models.spec import Feature
from pocket3d.node import Node

router = APIRouter(tags=["Jobs"])
T = TypeVar("T")
NOT_FOUND = {404: {"model": ErrorBody}, 401: {"model": ErrorBody}}


async def _read(node: Node, fn: Callable[..., T], *args: Any) -> T:
    """Run a short read. On SQLite it runs inline: a local read of ~0.1 ms costs less than a thread hop, and
    many threads doing short SQLite calls mostly contend for the GIL (measured: bench/api_overhead.py). A
    networked database is read from the threadpool, so the event loop never waits on the network."""
    if node.store.is_sqlite:
        return fn(*args)
    return await run_in_threadpool(fn, *args)


def _visible_job(node: Node, principal: Principal, job_id: str) -> JobRecord:
    job = node.snapshots.get(job_id)
    if job is None or not principal.can_see(job.owner_id):
        raise Pocket3DError(ErrorCode.JOB_NOT_FOUND, f"job {job_id} not found", {"job_id": job_id})
    return job


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
    key = (job.id, job.version, estimate)
    body = _rendered.get(key)
    if body is None:
        body = job_view(job, estimate).model_dump_json().encode()
        with _rendered_lock:
            _rendered[key] = body
            while len(_rendered) > _RENDERED_MAX:
                _rendered.popitem(last=False)
    return Response(body, media_type="application/json")


@router.get("/jobs", response_model=JobPage, responses=NOT_FOUND, summary="Your jobs, newest first")
def list_jobs(node: NodeDep, principal: PrincipalDep,
              status: Annotated[JobStatus | None, Query()] = None,
              feature: Annotated[Feature | None, Query()] = None,
              cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
              limit: Annotated[int, Query(ge=1, le=100)] = 20) -> JobPage:
    owner = None if principal.is_admin else principal.owner_id
    jobs = node.store.list_jobs(owner, status=status.value if status else None,
                                feature=feature.value if feature else None, before_id=cursor, limit=limit + 1)
    page = jobs[:limit]
    return JobPage(jobs=[_view(node, j) for j in page],
                   next_cursor=page[-1].id if len(jobs) > limit else None)


@router.get("/jobs/{job_id}", response_model=JobView, responses=NOT_FOUND, summary="Status, progress and outputs")
async def get_job(job_id: str, node: NodeDep, principal: PrincipalDep) -> Response:
    return await _read(node, _job_json, node, principal, job_id)


@router.get("/mesh/status/{job_id}", response_model=JobView, responses=NOT_FOUND, tags=["Mesh Generation"],
            summary="Alias of GET /jobs/{job_id}, as in the seed design")
async def mesh_status(job_id: str, node: NodeDep, principal: PrincipalDep) -> Response:
    return await _read(node, _job_json, node, principal, job_id)


@router.post("/jobs/{job_id}/cancel", response_model=JobView, responses={**NOT_FOUND, 409: {"model": ErrorBody}},
             summary="Cancel: a waiting job at once, a running one at its next progress report")
def cancel_job(job_id: str, node: NodeDep, principal: PrincipalDep) -> JobView:
    _visible_job(node, principal, job_id)
    status = transitions.cancel_job(node.store, job_id, release=node.release, now=time.time())
    if status == JobStatus.RUNNING:
        node.scheduler.cancel(job_id)
    return _view(node, _visible_job(node, principal, job_id))


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


@router.get("/jobs/{job_id}/outputs/{name}", responses={**NOT_FOUND, 410: {"model": ErrorBody}},
            response_class=FileResponse, summary="Download an output (supports Range and If-None-Match)")
def download_output(job_id: str, name: str, request: Request, node: NodeDep, principal: PrincipalDep,
                    if_none_match: Annotated[str | None, Header()] = None) -> Response:
    job = _visible_job(node, principal, job_id)
    if job.status != JobStatus.SUCCEEDED:
        raise Pocket3DError(ErrorCode.OUTPUT_NOT_FOUND, f"job {job_id} is {job.status.value}; outputs exist "
                            "once it has succeeded", {"status": job.status.value})
    if not job.outputs:
        raise Pocket3DError(ErrorCode.OUTPUT_EXPIRED, f"the outputs of job {job_id} have expired and were deleted")
    output = next((o for o in job.outputs if o.public and o.name == name), None)
    if output is None:
        raise Pocket3DError(ErrorCode.OUTPUT_NOT_FOUND, f"job {job_id} has no output {name!r}",
                            {"outputs": [o.name for o in job.outputs if o.public]})
    etag = f'"{output.sha256}"'
    if if_none_match and etag in [t.strip() for t in if_none_match.split(",")]:
        return Response(status_code=304, headers={"ETag": etag})
    path = node.artifacts.path(output.sha256)
    if not path.is_file():
        raise Pocket3DError(ErrorCode.OUTPUT_EXPIRED, f"output {name!r} of job {job_id} is no longer stored")
    _check_range(request, output.size)
    return FileResponse(path, media_type=output.media_type, filename=output.name,
                        headers={"ETag": etag, "Cache-Control": "private, max-age=3600"})


@router.get("/jobs/{job_id}/events", responses=NOT_FOUND, response_class=EventSourceResponse,
            summary="Server-Sent Events: every status and progress change, until a final state")
async def job_events(job_id: str, request: Request, node: NodeDep, principal: PrincipalDep,
                     last_event_id: Annotated[str | None, Header()] = None) -> EventSourceResponse:
    await run_in_threadpool(_visible_job, node, principal, job_id)
    after = int(last_event_id) if last_event_id and last_event_id.isascii() and last_event_id.isdigit() else 0

    async def events() -> AsyncIterator[dict]:
        last_status = None
        async for job in node.bus.follow(job_id, after_version=after):
            view = await run_in_threadpool(_view, node, job)
            kind = "status" if (job.status, job.current_stage) != last_status else "progress"
            last_status = (job.status, job.current_stage)
            yield {"event": kind, "id": str(job.version), "data": view.model_dump_json()}

    return EventSourceResponse(events(), ping=15, send_timeout=30)
