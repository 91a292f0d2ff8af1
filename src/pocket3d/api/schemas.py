"""Request and response bodies of the HTTP API."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any, Literal, get_args

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from pocket3d import formats
from pocket3d.errors import ErrorCode
from pocket3d.jobs.records import JobStatus as JobStatus  # re-exported: the SDK's users meet it in JobView
from pocket3d.jobs.records import StageStatus

OutputFormat = Literal["glb", "obj", "ply", "stl", "json", "fbx", "usdz"]  # every format pocket3d writes
if set(get_args(OutputFormat)) != set(formats.KEEPS):
    raise ImportError(f"OutputFormat lists {get_args(OutputFormat)}; pocket3d.formats writes {sorted(formats.KEEPS)}")
# Each feature's request lists the formats that keep what the feature makes (pocket3d.formats.formats_for):
# segmentation the parts, rigging the skin. Type checkers see every format.
if TYPE_CHECKING:
    MeshFormat = SegmentationFormat = RiggingFormat = OutputFormat
else:
    MeshFormat = Literal[formats.formats_for("mesh_generation")]
    SegmentationFormat = Literal[formats.formats_for("segmentation")]
    RiggingFormat = Literal[formats.formats_for("auto_rigging")]
InputFormat = Literal["png", "jpeg", "webp", "glb", "gltf", "obj", "ply", "stl", "fbx"]


class JobFeature(StrEnum):
    """What a job does: the features a client asks for (the routes under /mesh, /texture, /segment, /rig)."""

    MESH_GENERATION = "mesh_generation"
    TEXTURE_GENERATION = "texture_generation"
    SEGMENTATION = "segmentation"
    AUTO_RIGGING = "auto_rigging"


class Quality(StrEnum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"


# A file id from POST /files, a succeeded job's output ("job_…/model.glb"), or a data URI (data:image/png;base64,…).
InputRef = Annotated[str, Field(description="a file_id from POST /api/v1/files, a succeeded job's output "
                                "(job_…/model.glb: its outputs[].name), or a data: URI")]


_OUTPUT_FORMAT = Field("glb", description="the format of the result: a shorthand for output_formats with one")
_OUTPUT_FORMATS = Field(None, min_length=1, max_length=len(formats.KEEPS),
                        description="the formats of the result, each a download of the job (model.glb, "
                                    "model.fbx, ...): the model runs once and its result is written in each")


ViewName = Literal["front", "left", "back", "right"]
VIEW_ORDER: tuple[str, ...] = ("front", "left", "back", "right")
VIEWS_HELP = ("named views of one object, instead of `images`: front shows the face, left the object's own left "
              "side (a camera at azimuth 90), back, right (270); the models that place views by azimuth (the "
              "built-in visual hull and texturing) or by name (Hunyuan3D-2mv) use the names, the others take the "
              "images in this order")

WebhookEventName = Literal["job.succeeded", "job.failed", "job.cancelled", "job.progress"]
WebhookUrl = Annotated[str, Field(min_length=1, max_length=2048, examples=["https://example.com/hooks/pocket3d"])]


class _FeatureRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model_preference: str | None = Field(None, description="a model id from /system/models; default: the first "
                                         "available model of the feature that takes these inputs")
    output_format: OutputFormat = _OUTPUT_FORMAT
    output_formats: list[OutputFormat] | None = _OUTPUT_FORMATS
    quality: Quality = Quality.MEDIUM
    texture_resolution: int = Field(1024, ge=128, le=8192)
    seed: int | None = Field(None, ge=0, le=2**32 - 1)
    priority: int = Field(0, ge=-10, le=10, description="higher runs sooner")
    parameters: dict[str, Any] = Field(default_factory=dict, description="model-specific, validated by the model")
    webhook_url: WebhookUrl | None = Field(None, description="POST the job's events here, signed by the Standard "
                                           "Webhooks scheme with your secret (GET /webhooks/secret)")
    webhook_events: list[WebhookEventName] | None = Field(
        None, min_length=1, description="events sent to webhook_url; default job.succeeded, job.failed, "
        "job.cancelled")

    @model_validator(mode="after")
    def _formats_one_way(self) -> _FeatureRequest:
        if self.output_formats is not None and "output_format" in self.model_fields_set:
            raise ValueError("give output_format or output_formats, not both")
        return self

    @property
    def formats(self) -> list[str]:
        """The asked formats, in order, each once."""
        return list(dict.fromkeys(self.output_formats or [self.output_format]))


def _blank_to_none(v: str | None) -> str | None:
    return v.strip() or None if isinstance(v, str) else v


TargetFaces = Annotated[int | None, Field(ge=100, le=5_000_000, description="decimate the result to about this "
                                          "many faces (not offered for segmentation and rigging: decimating their "
                                          "result would drop the parts and the skin)")]
TextPrompt = Annotated[Annotated[str, Field(min_length=1, max_length=4000)] | None, BeforeValidator(_blank_to_none)]


ViewRenders = Annotated[bool, Field(description="also render the result from the front, left, back and right "
                                    "(view_0.png to view_3.png among the outputs, 512 px)")]


class _ViewsRequest(_FeatureRequest):
    images: list[InputRef] = Field(default_factory=list, max_length=8)
    views: dict[ViewName, InputRef] | None = Field(None, description=VIEWS_HELP)

    @model_validator(mode="after")
    def _views_or_images(self) -> _ViewsRequest:
        if self.views is not None and self.images:
            raise ValueError("give images or views, not both")
        if self.views is not None and not self.views:
            raise ValueError("views names no view: give at least front")
        return self

    def ordered_views(self) -> tuple[list[str], list[str] | None]:
        """The images in order, and the name of each when the request named them."""
        if not self.views:
            return list(self.images), None
        names = [name for name in VIEW_ORDER if name in self.views]
        return [self.views[name] for name in names], names


class MeshGenerationRequest(_ViewsRequest):
    output_format: MeshFormat = _OUTPUT_FORMAT
    output_formats: list[MeshFormat] | None = _OUTPUT_FORMATS
    text_prompt: TextPrompt = None
    target_faces: TargetFaces = None
    texture: bool = Field(True, description="false: the shape only, without colours or texture (a shape model's "
                          "paint stage is skipped, which saves its time)")
    view_renders: ViewRenders = False

    @model_validator(mode="after")
    def _needs_input(self) -> MeshGenerationRequest:
        if not self.text_prompt and not self.images and not self.views:
            raise ValueError("give text_prompt or images (or views instead of images)")
        return self


class TextureGenerationRequest(_ViewsRequest):
    output_format: MeshFormat = _OUTPUT_FORMAT
    output_formats: list[MeshFormat] | None = _OUTPUT_FORMATS
    mesh: InputRef
    text_prompt: TextPrompt = None
    target_faces: TargetFaces = None
    view_renders: ViewRenders = False

    @model_validator(mode="after")
    def _needs_guidance(self) -> TextureGenerationRequest:
        if not self.text_prompt and not self.images and not self.views:
            raise ValueError("give text_prompt or images (or views instead of images) to guide the texture")
        return self


class SegmentationRequest(_FeatureRequest):
    output_format: SegmentationFormat = _OUTPUT_FORMAT
    output_formats: list[SegmentationFormat] | None = _OUTPUT_FORMATS
    mesh: InputRef


class RiggingRequest(_FeatureRequest):
    output_format: RiggingFormat = _OUTPUT_FORMAT
    output_formats: list[RiggingFormat] | None = _OUTPUT_FORMATS
    mesh: InputRef


class ConvertRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"output_formats": ["fbx", "usdz"]}]})

    output_formats: list[OutputFormat] = Field(min_length=1, max_length=len(formats.KEEPS),
                                               description="the formats to write the job's result in: those its "
                                               "feature's requests offer (a rig: glb, fbx; parts: glb, obj, fbx, "
                                               "usdz)")

    @property
    def formats(self) -> list[str]:
        return list(dict.fromkeys(self.output_formats))


# -- responses --------------------------------------------------------------------------------------------------

def iso(ts: float | None) -> str | None:
    return datetime.fromtimestamp(ts, UTC).isoformat() if ts is not None else None


class ErrorBody(BaseModel):
    """Every 4xx and 5xx answer: a stable code to branch on, a message for people, and a hint where there is an
    obvious next step."""

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "error_code": "FILE_NOT_FOUND", "message": "images[0]: 'chair.png' is a file name or path, not a file id",
        "details": {"field": "images[0]", "file_id": "chair.png"}, "timestamp": "2026-11-22T05:50:29+00:00",
        "request_id": "5f0c2a9e3b8d4c1fa6e7d2b9c0a1e3f4",
        "hint": "upload it with POST /api/v1/files and pass the file_id it answers, or send a data: URI"}]})

    error_code: ErrorCode = Field(description="stable: clients branch on it")
    message: str = Field(description="what is wrong, for people")
    details: dict[str, Any] = Field(description="the values the message names, for programs")
    timestamp: str
    request_id: str = Field(description="also in the X-Request-ID header; quote it when reporting a problem")
    hint: str | None = Field(None, description="what to do next, where there is an obvious next step")


class JobLinks(BaseModel):
    self: str
    events: str
    cancel: str


class JobAccepted(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "job_id": "job_01JD8X4T0M5Q3V7W9Y2B6C8E1F", "status": "queued",
        "links": {"self": "/api/v1/jobs/job_01JD8X4T0M5Q3V7W9Y2B6C8E1F",
                  "events": "/api/v1/jobs/job_01JD8X4T0M5Q3V7W9Y2B6C8E1F/events",
                  "cancel": "/api/v1/jobs/job_01JD8X4T0M5Q3V7W9Y2B6C8E1F/cancel"}}]})

    job_id: str
    status: JobStatus
    links: JobLinks


class JobError(BaseModel):
    code: ErrorCode = Field(description="why the job failed: MODEL_ERROR, INVALID_INPUT, EXPORT_FAILED, TIMEOUT, "
                            "OUT_OF_MEMORY, WORKER_CRASHED, WORKER_LOST, …")
    message: str


class OutputInfo(BaseModel):
    name: str
    format: str
    size: int
    sha256: str
    media_type: str
    url: str


class StageInfo(BaseModel):
    name: str = Field(description="orient and export are pocket3d's own stages; the others run a model")
    model: str | None
    device: str | None = Field(description="where its latest attempt ran (cpu, cuda:0); null for pocket3d's own "
                                           "stages, which run in the server")
    status: StageStatus
    progress: float = Field(description="0-100")
    attempts: int
    started_at: str | None = Field(description="its latest attempt's start")
    finished_at: str | None
    seconds: float | None = Field(description="its run time (its latest attempt's), once finished")


class JobWarning(BaseModel):
    code: str = Field(description="stable: ROTATED_TO_Y_UP, UNKNOWN_OBJECT, VIEW_LEFT_OUT, FLAT_MESH, OPEN_MESH, "
                                  "CUTOUT_FALLBACK, or a model's own")
    message: str
    stage: str = Field(description="the stage that raised it")


class AppliedRotation(BaseModel):
    axis: str
    degrees: float
    matrix: list[list[float]] = Field(description="3x3, applied as R @ v to the input's coordinates")


class Orientation(BaseModel):
    detected: Literal["y", "z"] = Field(description="the mesh input's up axis")
    source: Literal["format", "shape", "convention", "parameter"] = Field(
        description="format: the file says (glTF, FBX); shape: judged by what the mesh stands on (OBJ, PLY, STL); "
                    "convention: the shape did not tell, the format's habit decided (Y for OBJ, Z for PLY and STL); "
                    "parameter: parameters.up_axis")
    applied_rotation: AppliedRotation | None = Field(description="what turned it Y-up; null when it already was")
    scores: dict[str, float] | None = Field(None, description="each axis's base score, when the shape was judged")


class JobView(BaseModel):
    job_id: str
    status: JobStatus
    feature: JobFeature
    model: str
    progress: float = Field(description="0-100")
    message: str | None = Field(description="the latest progress message of the model at work (or of the last "
                                            "one that said something)")
    warnings: list[JobWarning] = Field(description="what was done other than asked: a fallback a model took, a "
                                                   "mesh input turned Y-up")
    input: dict[str, Any] | None = Field(description="the request as it was sent (data URIs shortened)")
    orientation: Orientation | None = Field(description="a mesh input's up axis, and the rotation that made it "
                                                        "Y-up; null for jobs without a mesh input")
    current_stage: str | None
    stages: list[StageInfo]
    queue_position: int | None
    eta_seconds: float | None
    cancel_requested: bool
    created_at: str
    started_at: str | None
    finished_at: str | None
    expires_at: str | None = Field(description="outputs are deleted after this")
    error: JobError | None
    outputs: list[OutputInfo]
    links: JobLinks


class JobPage(BaseModel):
    jobs: list[JobView]
    next_cursor: str | None


class FileInfo(BaseModel):
    file_id: str = Field(description="pass it as an input of a job (images, mesh)")
    sha256: str
    size: int
    media_type: str
    kind: Literal["image", "mesh"]
    format: InputFormat
    filename: str | None
    created_at: str
    expires_at: str | None = Field(description="usable by your jobs until then (a job that took it keeps it until "
                                   "the job ends); afterwards it answers 410 FILE_EXPIRED")


class FilePage(BaseModel):
    files: list[FileInfo]
    next_cursor: str | None


class ModelInfo(BaseModel):
    id: str
    feature: str
    available: bool
    unavailable_reasons: list[str]
    supported_inputs: list[str]
    supported_outputs: list[str]
    vram_requirement: int
    max_concurrent: int
    devices: list[str]
    loaded: bool
    description: str
    parameters_schema: dict[str, Any] | None
    measured_peak_mb: float | None = Field(None, description="the most one stage held, as the device worker "
                                           "measured it (the scheduler plans with it instead of vram_requirement)")
    measured_load_seconds: float | None = None
    measured_run_seconds: float | None = Field(None, description="a moving average of its stages' run time")


class ModelList(BaseModel):
    models: list[ModelInfo]
    unavailable_formats: dict[str, str]
    problems: list[str]


class DeviceInfo(BaseModel):
    id: str
    kind: str = Field(description="cuda or cpu")
    name: str
    virtual: bool = Field(description="a CPU slice declared in gpu.virtual_devices")
    memory_total_mb: int
    memory_used_mb: int = Field(description="in use on the device now, by every process (a virtual device: by "
                                            "pocket3d's models)")
    memory_free_mb: int
    budget_mb: int = Field(description="what the scheduler may fill: total x max_utilization, less the buffer")
    scheduled_mb: int = Field(description="what the scheduler accounts to the models resident there")
    utilization: float | None = Field(None, description="compute, 0-1, where the device reports it")
    temperature_c: float | None = None
    resident_models: list[str] = Field(description="loaded there, or being loaded (those are also in loading_models)")
    loading_models: list[str] = Field(default_factory=list, description="being loaded there now")
    running_stages: list[int]
    worker_pid: int | None = Field(None, description="the device worker process (started with the server)")


class CallerLimits(BaseModel):
    max_file_size: int = Field(description="bytes: the largest upload POST /files takes")
    max_image_pixels: int = Field(description="the largest image, in pixels, an upload may hold")
    max_request_size: int = Field(description="bytes: the largest JSON request (data: URIs count here)")
    max_jobs_per_owner: int = Field(description="jobs you may have waiting or running at once")
    file_lifetime_seconds: int = Field(description="how long an upload stays usable")


class Caller(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "owner_id": "alice", "role": "user", "key_id": "3f9c2a1b7d4e", "auth_enabled": True,
        "limits": {"max_file_size": 524288000, "max_image_pixels": 16777216, "max_request_size": 104857600,
                   "max_jobs_per_owner": 100, "file_lifetime_seconds": 86400}}]})

    owner_id: str | None = Field(description="whose jobs and files this key sees (an admin key sees everyone's); "
                                 "null when no key was sent and the server wants one")
    role: Literal["admin", "user"] | None
    key_id: str | None = Field(description="the key's id (the part after p3d_), never the key; null with auth off")
    auth_enabled: bool = Field(description="false: the server checks no keys, every caller is the local admin")
    limits: CallerLimits = Field(description="what this server takes from you, to check before sending")


class Health(BaseModel):
    status: Literal["ok"]
    version: str


class Readiness(BaseModel):
    ready: bool
    status: Literal["ready", "warming", "not_ready"] = Field(
        "ready", description="warming: the models marked preload (or pinned) are still loading; not_ready: see "
        "reasons")
    reasons: list[str]


# -- webhooks ---------------------------------------------------------------------------------------------------

class WebhookEndpointCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: WebhookUrl
    events: list[WebhookEventName] = Field(min_length=1, examples=[["job.succeeded", "job.failed"]])
    description: str | None = Field(None, max_length=255)


class WebhookEndpointView(BaseModel):
    id: str
    url: str
    events: list[str]
    description: str | None
    created_at: str


class WebhookEndpointCreated(WebhookEndpointView):
    secret: str = Field(description="whsec_...: verifies this endpoint's deliveries; shown only in this answer")


class WebhookEndpointList(BaseModel):
    endpoints: list[WebhookEndpointView]


class WebhookSecret(BaseModel):
    secret: str = Field(description="whsec_...: verifies deliveries to the webhook_url of your requests")


class DeliveryAttemptView(BaseModel):
    at: str
    seconds: float
    status_code: int | None = Field(description="the receiver's answer; null when none came (timeout, refused "
                                    "address, connection error)")
    error: str | None


class DeliveryView(BaseModel):
    id: str = Field(description="the webhook-id header, the same on every attempt")
    event: str
    url: str
    endpoint_id: str | None = Field(description="the registered endpoint; null for the request's webhook_url")
    status: str = Field(description="pending, sending, succeeded, failed or superseded (a job.progress message "
                        "replaced by a newer one before it went out)")
    attempts: list[DeliveryAttemptView]
    next_attempt_at: str | None
    created_at: str
    finished_at: str | None


class DeliveryList(BaseModel):
    deliveries: list[DeliveryView]


# -- a format the request's feature cannot keep its result in ----------------------------------------------------

_HOLDS_NAMES = {formats.PARTS: "its parts", formats.SKIN: "its skeleton and skin weights"}


def offered_formats(fields: Mapping[str, Any]) -> list[str]:
    """The output formats a request model takes (its output_format field's literals), from its model_fields."""
    field = fields.get("output_format")
    return [a for a in get_args(field.annotation) if a in formats.KEEPS] if field is not None else []


class UnsupportedFormat(BaseModel):
    """A format pocket3d writes, asked of a feature whose result it cannot hold (a rig as USDZ, parts as STL):
    the server answers it, and the SDK refuses it before sending, as 422 UNSUPPORTED_OUTPUT_FORMAT."""

    message: str
    details: dict[str, Any]
    hint: str


def unsupported_format(fields: Mapping[str, Any], error: Mapping[str, Any]) -> UnsupportedFormat | None:
    """``error`` (one of pydantic's, for a request model with ``fields``) as an unsupported format, or None when
    it is something else (a name pocket3d does not write at all stays INVALID_REQUEST)."""
    loc, fmt = [str(p) for p in error.get("loc", ())], error.get("input")
    if error.get("type") != "literal_error" or not {"output_format", "output_formats"} & set(loc) or \
            not isinstance(fmt, str) or fmt not in formats.KEEPS:
        return None
    offered = offered_formats(fields)
    if not offered:
        return None
    held = next((_HOLDS_NAMES[needed] for feature, needed in formats.RESULT_HOLDS.items()
                 if formats.formats_for(feature) == tuple(offered)), "what it is")
    where = ".".join(p for p in loc if p != "body")
    return UnsupportedFormat(message=f"{where}: this request's result cannot be written as {fmt!r} without losing "
                             f"{held}", details={"output_format": fmt, "supported_outputs": offered},
                             hint=f"ask for one of {', '.join(offered)}")
