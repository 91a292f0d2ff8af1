"""Records to response bodies."""

from __future__ import annotations

from pocket3d.api.schemas import FileInfo, JobError, JobLinks, JobView, JobWarning, OutputInfo, StageInfo, iso
from pocket3d.jobs.records import ORIENT_STAGE, FileRecord, JobRecord, OutputRecord, StageRecord
from pocket3d.scheduler.base import Estimate

API = "/api/v1"


def job_links(job_id: str) -> JobLinks:
    return JobLinks(self=f"{API}/jobs/{job_id}", events=f"{API}/jobs/{job_id}/events",
                    cancel=f"{API}/jobs/{job_id}/cancel")


def job_view(job: JobRecord, estimate: Estimate) -> JobView:
    current = job.stages[job.current_stage].name if job.current_stage is not None and not job.status.is_final \
        else None
    orient = next((s for s in job.stages if s.name == ORIENT_STAGE and s.model_id is None and s.details), None)
    return JobView(
        job_id=job.id, status=job.status.value, feature=job.feature, model=job.model_id,
        progress=job.progress, message=_latest_message(job), input=job.input,
        warnings=[JobWarning(code=w.code, message=w.message, stage=s.name) for s in job.stages for w in s.warnings],
        orientation=orient.details if orient is not None else None, current_stage=current,
        stages=[_stage_info(s) for s in job.stages],
        queue_position=estimate.queue_position, eta_seconds=estimate.eta_seconds,
        cancel_requested=job.cancel_requested,
        created_at=iso(job.created_at), started_at=iso(job.started_at), finished_at=iso(job.finished_at),
        expires_at=iso(job.expires_at),
        error=JobError(code=job.error_code, message=job.error_message or "") if job.error_code else None,
        outputs=[OutputInfo(name=o.name, format=o.format, size=o.size, sha256=o.sha256, media_type=o.media_type,
                            url=f"{API}/jobs/{job.id}/outputs/{o.name}") for o in job.outputs if o.public],
        links=job_links(job.id))


def _stage_info(s: StageRecord) -> StageInfo:
    finished = s.finished_at is not None and s.started_at is not None
    return StageInfo(name=s.name, model=s.model_id, device=s.device, status=s.status.value,
                     progress=round(100 * s.progress, 2), attempts=s.attempts, started_at=iso(s.started_at),
                     finished_at=iso(s.finished_at),
                     seconds=round(s.finished_at - s.started_at, 3) if finished else None)


def _latest_message(job: JobRecord) -> str | None:
    """The message of the stage at work, else of the last stage before it that said something."""
    last = job.current_stage if job.current_stage is not None else len(job.stages) - 1
    return next((s.message for s in reversed(job.stages[:last + 1]) if s.message), None)


def file_view(f: FileRecord) -> FileInfo:
    return FileInfo(file_id=f.id, sha256=f.sha256, size=f.size, media_type=f.media_type, kind=f.kind,
                    format=f.format, filename=f.filename, created_at=iso(f.created_at), expires_at=iso(f.expires_at))


def download_filename(job: JobRecord, output: OutputRecord) -> str:
    """What a download is saved as: the job's subject (the upload's or source job's name, with what the job did:
    goblin-rigged.fbx), else the job's id (job_….glb); outputs other than the model get their own name after it
    (goblin-rigged-preview.png)."""
    base = job.request.get("download_name") or job.id
    if output.name.startswith("model."):
        return base + output.name.removeprefix("model")
    return f"{base}-{output.name}"
