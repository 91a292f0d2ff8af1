"""What a request may name: an upload (live until its expires_at, then 410 FILE_EXPIRED; deleted or unknown,
404), a job, and a succeeded job's output (``job_…/model.glb``), each only for its owner (or an admin)."""

from __future__ import annotations

import time

from pocket3d.api.keys import Principal
from pocket3d.errors import ErrorCode, Pocket3DError
from pocket3d.jobs.records import FileRecord, JobRecord, JobStatus, OutputRecord
from pocket3d.jobs.transitions import is_expired
from pocket3d.node import Node

UPLOAD_HINT = "upload it again with POST /api/v1/files"
RERUN_HINT = "outputs are kept until the job's expires_at; submit the job again to make them anew"


def visible_file(node: Node, principal: Principal, file_id: str, field: str | None = None, *,
                 not_found_hint: str = "GET /api/v1/files lists your uploads") -> FileRecord:
    """The live upload ``file_id`` of this principal, or the 404/410 that says why not (``field``: where the
    request named it)."""
    where = f"{field}: " if field else ""
    details = {"file_id": file_id, **({"field": field} if field else {})}
    record = node.store.get_file(file_id)
    if record is not None and principal.can_see(record.owner_id):
        if not is_expired(record.expires_at, time.time()):
            return record
        expired = True
    else:
        owner = node.store.expired_file_owner(file_id) if record is None else None
        expired = owner is not None and principal.can_see(owner)
    if expired:
        raise Pocket3DError(ErrorCode.FILE_EXPIRED, f"{where}file {file_id} has expired", details, hint=UPLOAD_HINT)
    raise Pocket3DError(ErrorCode.FILE_NOT_FOUND, f"{where}file {file_id} not found", details, hint=not_found_hint)


def visible_job(node: Node, principal: Principal, job_id: str, field: str | None = None) -> JobRecord:
    job = node.snapshots.get(job_id)
    if job is None or not principal.can_see(job.owner_id):
        where = f"{field}: " if field else ""
        raise Pocket3DError(ErrorCode.JOB_NOT_FOUND, f"{where}job {job_id} not found",
                            {"job_id": job_id, **({"field": field} if field else {})},
                            hint="GET /api/v1/jobs lists your jobs; a job id looks like job_…")
    return job


def _succeeded(job: JobRecord, field: str | None) -> None:
    """Refuse a job whose outputs cannot be used (yet, or any more)."""
    where = f"{field}: " if field else ""
    details = {"job_id": job.id, "status": job.status.value, **({"field": field} if field else {})}
    if not job.status.is_final:
        raise Pocket3DError(ErrorCode.OUTPUT_NOT_READY, f"{where}job {job.id} is {job.status.value}; its outputs "
                            "can be used once it has succeeded", details,
                            hint=f"wait for it: GET /api/v1/jobs/{job.id} or its events, then send this again")
    if job.status != JobStatus.SUCCEEDED:
        raise Pocket3DError(ErrorCode.OUTPUT_NOT_FOUND, f"{where}job {job.id} {job.status.value}; it has no outputs",
                            details, hint=f"GET /api/v1/jobs/{job.id} says why (error)")
    if not job.outputs or is_expired(job.expires_at, time.time()):
        raise Pocket3DError(ErrorCode.OUTPUT_EXPIRED, f"{where}the outputs of job {job.id} have expired", details,
                            hint=RERUN_HINT)


def visible_output(node: Node, principal: Principal, job_id: str, name: str,
                   field: str | None = None) -> tuple[JobRecord, OutputRecord]:
    """A succeeded job's output, named as an input of another job."""
    job = visible_job(node, principal, job_id, field)
    _succeeded(job, field)
    public = [o for o in job.outputs if o.public]
    output = next((o for o in public if o.name == name), None)
    if output is None:
        raise Pocket3DError(ErrorCode.OUTPUT_NOT_FOUND, f"{field + ': ' if field else ''}job {job_id} has no output "
                            f"{name!r}", {"job_id": job_id, "outputs": [o.name for o in public]},
                            hint=f"its outputs are {', '.join(f'{job_id}/{o.name}' for o in public)}")
    return job, output


def converted_mesh(node: Node, principal: Principal, job: JobRecord) -> tuple[JobRecord, OutputRecord]:
    """The mesh a succeeded job's export stage wrote its formats from: what a conversion starts from."""
    _succeeded(job, None)
    if job.request.get("convert_of"):  # a conversion's own input is its source's mesh
        return converted_mesh(node, principal, visible_job(node, principal, job.request["convert_of"]))
    meshes = [o for o in job.outputs if not o.public and ".mesh." in o.name]
    if not meshes:
        raise Pocket3DError(ErrorCode.OUTPUT_EXPIRED, f"the mesh of job {job.id} is no longer stored",
                            {"job_id": job.id}, hint=RERUN_HINT)
    return job, max(meshes, key=lambda o: o.stage_index)
