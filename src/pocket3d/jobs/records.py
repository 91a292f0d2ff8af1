"""Job and stage records and their states. Every change of state is a function in ``transitions``."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class JobStatus(StrEnum):
    QUEUED = "queued"  # accepted and persisted; no stage has started yet
    RUNNING = "running"  # a stage has started; between two stages the job stays running
    SUCCEEDED = "succeeded"  # every stage succeeded; outputs can be downloaded until expires_at
    FAILED = "failed"  # a stage failed for good; error_code and error_message say why
    CANCELLED = "cancelled"  # its owner cancelled it; partial outputs are discarded

    @property
    def is_final(self) -> bool:
        return self in FINAL_JOB_STATES


FINAL_JOB_STATES = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED})


class StageStatus(StrEnum):
    PENDING = "pending"  # waits for the stage before it to succeed
    QUEUED = "queued"  # runnable: the next worker that can host its model claims it
    RUNNING = "running"  # claimed by a worker under a lease that the worker keeps renewing
    SUCCEEDED = "succeeded"  # its outputs are stored; the next stage is queued
    FAILED = "failed"  # failed for good, and so did its job
    CANCELLED = "cancelled"  # its job was cancelled before or while it ran


# The stage kind that converts the last mesh to the requested format; run by pocket3d, not by a model.
EXPORT_STAGE = "export"
# The stage kind that turns a mesh input Y-up before any model sees it; run by pocket3d too.
ORIENT_STAGE = "orient"
OWN_STAGES = frozenset({EXPORT_STAGE, ORIENT_STAGE})


@dataclass(frozen=True)
class StageWarning:
    """Something a stage did other than asked, that the user should know of (a fallback it took)."""

    code: str  # stable: pocket3d.errors.WarningCode or a model's own
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}


@dataclass(frozen=True)
class StageRecord:
    id: int
    job_id: str
    index: int
    name: str
    model_id: str | None
    params: dict[str, Any]
    status: StageStatus
    progress: float
    attempts: int
    max_attempts: int
    started_at: float | None
    finished_at: float | None
    error_code: str | None
    error_message: str | None
    device: str | None = None
    message: str | None = None
    warnings: list[StageWarning] = field(default_factory=list)
    details: dict[str, Any] | None = None


@dataclass(frozen=True)
class OutputRecord:
    name: str
    stage_index: int
    sha256: str
    size: int
    media_type: str
    format: str
    public: bool


@dataclass(frozen=True)
class JobRecord:
    id: str
    owner_id: str
    feature: str
    model_id: str
    status: JobStatus
    progress: float
    current_stage: int | None
    priority: int
    request: dict[str, Any]
    error_code: str | None
    error_message: str | None
    cancel_requested: bool
    created_at: float
    started_at: float | None
    finished_at: float | None
    expires_at: float | None
    version: int  # raised by every change; the SSE event id
    stages: list[StageRecord] = field(default_factory=list)
    outputs: list[OutputRecord] = field(default_factory=list)
    input: dict[str, Any] | None = None  # the request as the client sent it (see NewJob.input)


@dataclass(frozen=True)
class FileRecord:
    id: str
    owner_id: str
    sha256: str
    size: int
    media_type: str
    kind: str  # "image" or "mesh"
    format: str  # png, jpeg, webp, glb, obj, ...
    filename: str | None
    created_at: float
    expires_at: float | None  # usable by its owner's jobs until then; a job that took it keeps it until it ends


@dataclass(frozen=True)
class NewStage:
    name: str
    model_id: str | None
    params: dict[str, Any] = field(default_factory=dict)
    weight: float = 1.0  # share of the job's progress bar


@dataclass(frozen=True)
class NewFile:
    id: str
    owner_id: str
    sha256: str
    size: int
    media_type: str
    kind: str
    format: str
    filename: str | None


@dataclass(frozen=True)
class IdempotencyKey:
    """A submit's ``Idempotency-Key``, stored with its job so that a retried submit finds that job."""

    key: str
    fingerprint: str  # of the request it came with: the same key with another request is refused
    expires_at: float


@dataclass(frozen=True)
class JobInput:
    """One input of a new job, as the client named it: an upload (``file_id``), a succeeded job's output
    (``job_id`` and ``output``), or bytes sent inline and already in the artifact store (``file_id``, a fresh
    id that names no upload, with ``sha256`` and ``format``)."""

    role: str  # "image" or "mesh"
    file_id: str | None = None
    job_id: str | None = None
    output: str | None = None
    sha256: str | None = None
    format: str | None = None

    @property
    def inline(self) -> bool:
        return self.sha256 is not None


@dataclass(frozen=True)
class NewJob:
    owner_id: str
    feature: str
    model_id: str
    stages: list[NewStage]
    request: dict[str, Any]
    inputs: list[JobInput] = field(default_factory=list)  # in order
    priority: int = 0
    idempotency: IdempotencyKey | None = None
    input: dict[str, Any] | None = None  # the request as sent (data URIs shortened), echoed in the job's view


@dataclass(frozen=True)
class ClaimedStage:
    """A stage a worker now holds; ``lease_token`` must accompany every report about it."""

    stage: StageRecord
    lease_token: str
    job_request: dict[str, Any]
    owner_id: str


@dataclass(frozen=True)
class QueuedStage:
    """A runnable stage as the scheduler sees it."""

    stage_id: int
    job_id: str
    index: int
    model_id: str | None  # None for the export stage, which pocket3d runs itself
    feature: str
    priority: int
    submitted_at: float  # the job's
    queued_at: float  # the stage's: when the stage before it finished
    later: tuple[str | None, ...] = ()  # model ids of the job's stages after this one (None: export)


@dataclass(frozen=True)
class JobEvent:
    """A fact about a job that a committed write established, for after-commit listeners (metrics)."""

    kind: str  # "submitted" or "finished"
    job_id: str
    feature: str
    status: JobStatus
    error_code: str | None = None


# -- webhooks ------------------------------------------------------------------------------------------------


class WebhookEvent(StrEnum):
    JOB_SUCCEEDED = "job.succeeded"
    JOB_FAILED = "job.failed"
    JOB_CANCELLED = "job.cancelled"
    JOB_PROGRESS = "job.progress"  # at most one a job per webhooks.progress_interval


FINAL_EVENTS = {JobStatus.SUCCEEDED: WebhookEvent.JOB_SUCCEEDED, JobStatus.FAILED: WebhookEvent.JOB_FAILED,
                JobStatus.CANCELLED: WebhookEvent.JOB_CANCELLED}
DEFAULT_REQUEST_EVENTS = (WebhookEvent.JOB_SUCCEEDED, WebhookEvent.JOB_FAILED, WebhookEvent.JOB_CANCELLED)


class DeliveryStatus(StrEnum):
    PENDING = "pending"  # waits for its next attempt (next_attempt_at)
    SENDING = "sending"  # an attempt is in flight under a lease; pending again if the sender dies meanwhile
    SUCCEEDED = "succeeded"  # the receiver answered 2xx
    FAILED = "failed"  # no 2xx within webhooks.retry_for, or its endpoint was deleted
    SUPERSEDED = "superseded"  # a job.progress message that a newer message of the job replaced before it went out


@dataclass(frozen=True)
class WebhookEndpoint:
    id: str
    owner_id: str
    url: str
    events: list[str]
    description: str | None
    created_at: float


@dataclass(frozen=True)
class DeliveryAttempt:
    started_at: float
    seconds: float
    status_code: int | None
    error: str | None


@dataclass(frozen=True)
class Delivery:
    id: str
    job_id: str
    owner_id: str
    endpoint_id: str | None
    url: str
    event: str
    payload: dict[str, Any]
    status: DeliveryStatus
    attempts: int
    next_attempt_at: float | None
    created_at: float
    finished_at: float | None
    history: list[DeliveryAttempt] = field(default_factory=list)


@dataclass(frozen=True)
class ClaimedDelivery:
    """A delivery the sender holds for one attempt, with the secret that signs it."""

    delivery: Delivery
    secret: str | None  # None: its endpoint was deleted meanwhile
