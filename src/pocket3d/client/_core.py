"""What Client and AsyncClient share: configuration, request bodies, retry decisions, events, download plans.

The two clients differ only in their I/O loops; everything those loops decide is decided here, once.
"""

from __future__ import annotations

import email.message
import hashlib
import io
import logging
import os
import random
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Generic, Literal, Required, Protocol, TypeAlias, TypedDict, TypeVar, cast

import httpx
from httpx_sse import ServerSentEvent
from pydantic import BaseModel, ValidationError

from pocket3d.api.schemas import (
    ConvertRequest,
    FileInfo,
    JobFeature,
    JobStatus,
    JobView,
    MeshGenerationRequest,
    OutputFormat,
    OutputInfo,
    Quality,
    RiggingRequest,
    SegmentationRequest,
    TextureGenerationRequest,
    ViewName,
    WebhookEventName,
    unsupported_format,
)
from pocket3d.client.errors import (
    APIError,
    ConnectionFailed,
    JobCancelled,
    JobFailed,
    JobNotFinished,
    QueueFull,
    RateLimited,
    ServerMismatch,
    ServerUnreachable,
    ServiceUnavailable,
    ValidationFailed,
    WaitTimeout,
)

if TYPE_CHECKING:
    from PIL.Image import Image

log = logging.getLogger("pocket3d.client")

DEFAULT_URL = "http://127.0.0.1:8000"
API_PREFIX = "/api/v1"
FINAL_STATES = frozenset({"succeeded", "failed", "cancelled"})
QUIET_CHECK = 10.0  # seconds of silence on an event stream after which a wait with a deadline looks at the clock

# -- configuration ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    api_url: str  # the server's URL with /api/v1
    api_key: str | None
    timeout: float
    max_retries: int

    @classmethod
    def from_args(cls, url: str | None, api_key: str | None, timeout: float, max_retries: int) -> Config:
        """Arguments first, then POCKET3D_URL / POCKET3D_API_KEY, then a server on this machine."""
        base = (url or os.environ.get("POCKET3D_URL") or DEFAULT_URL).rstrip("/")
        if not base.endswith(API_PREFIX):
            base += API_PREFIX
        return cls(base, api_key or os.environ.get("POCKET3D_API_KEY") or None, timeout, max_retries)

    @property
    def headers(self) -> dict[str, str]:
        from pocket3d import __version__

        headers = {"User-Agent": f"pocket3d-client/{__version__}"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        return headers

    def link(self, url: str) -> str:
        """A URL the server returned (an output's ``url``): its paths are under /api/v1 from the server's root, so
        they are taken relative to the configured URL, which may sit under a path prefix behind a proxy."""
        if url.startswith(API_PREFIX + "/"):
            return self.api_url + url[len(API_PREFIX):]
        return url

    @property
    def server_url(self) -> str:
        return self.api_url.removesuffix(API_PREFIX)

    def stream_timeout(self, remaining: float | None) -> httpx.Timeout:
        """For an event stream. The server sends a ping every 15 s, so without a deadline a read that waits 45 s
        has lost its connection. With one, a read waits at most QUIET_CHECK seconds (or what is left), because the
        pings would keep a stream open past the deadline: the caller looks at the clock and listens again."""
        read = max(self.timeout, 45.0) if remaining is None else max(0.1, min(remaining, QUIET_CHECK))
        return httpx.Timeout(self.timeout, read=read)


# -- retries ---------------------------------------------------------------------------------------------------

# Nothing reached the server, so any request may be sent again.
NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout)
# Worth another try for a request that is safe to repeat.
TRANSIENT = (RateLimited, QueueFull)
MAX_RETRY_AFTER = 60.0


def is_transient(error: APIError) -> bool:
    """429, and 502/503/504 that a moment may cure (not a model that is not installed here)."""
    if isinstance(error, TRANSIENT):
        return True
    return isinstance(error, ServiceUnavailable) and error.code != "MODEL_UNAVAILABLE"


def backoff(attempt: int, retry_after: float | None = None) -> float:
    """Seconds before try ``attempt + 1``: what the server asked for, else exponential with jitter."""
    if retry_after is not None:
        return min(retry_after, MAX_RETRY_AFTER)
    return min(0.25 * 2.0 ** attempt, 8.0) * random.uniform(0.5, 1.0)


def retrying(method: str, url: str, reason: object, attempt: int, retry_after: float | None = None) -> float:
    """The pause before try ``attempt + 2``, said on the ``pocket3d.client`` logger (the CLI shows it)."""
    delay = backoff(attempt, retry_after)
    log.warning("%s %s: %s; trying again in %.1f s", method, url, reason, delay)
    return delay


def connection_error(config: Config, error: httpx.TransportError) -> ConnectionFailed:
    if isinstance(error, NOT_SENT):
        return ServerUnreachable(config.server_url, error)
    return ConnectionFailed(f"the connection to {config.server_url} failed: {type(error).__name__}: {error}")


# -- requests --------------------------------------------------------------------------------------------------

class _HasJob(Protocol):
    @property
    def view(self) -> JobView: ...


# An input: a file id, a data URI or "job_…/model.glb" as the API takes them; what upload() returned; an output of
# a job; or a job (a Job, or its JobView), which stands for its model file.
FileRef: TypeAlias = "str | FileInfo | OutputInfo | JobView | _HasJob"


class _CommonFields(TypedDict, total=False):
    model_preference: str | None
    output_format: OutputFormat
    output_formats: Sequence[OutputFormat]  # several at once (the model runs once); instead of output_format
    quality: Quality | Literal["low", "medium", "high"]
    texture_resolution: int
    seed: int | None
    priority: int
    parameters: dict[str, Any]
    webhook_url: str | None  # the job's events are POSTed there, signed (client.webhooks.secret() verifies them)
    webhook_events: Sequence[WebhookEventName] | None
    idempotency_key: str  # sent as the Idempotency-Key header; a new UUID when not given


class MeshFields(_CommonFields, total=False):
    text_prompt: str | None
    images: Sequence[FileRef]
    views: Mapping[ViewName, FileRef] | None  # named views instead of images (left: the object's own left)
    target_faces: int | None
    texture: bool  # False: the shape only
    view_renders: bool  # also view_0.png..view_3.png: the result from the front, left, back and right


class TextureFields(_CommonFields, total=False):
    mesh: Required[FileRef]
    text_prompt: str | None
    images: Sequence[FileRef]
    views: Mapping[ViewName, FileRef] | None
    target_faces: int | None
    view_renders: bool


class MeshInputFields(_CommonFields, total=False):
    mesh: Required[FileRef]


@dataclass(frozen=True)
class Feature:
    path: str
    request: type[BaseModel]


MESH_GENERATION = Feature("/mesh/generate", MeshGenerationRequest)
TEXTURE_GENERATION = Feature("/texture/generate", TextureGenerationRequest)
SEGMENTATION = Feature("/segment", SegmentationRequest)
AUTO_RIGGING = Feature("/rig", RiggingRequest)


def _ref(value: FileRef) -> str:
    if isinstance(value, str):
        if not value.startswith(("file_", "job_", "data:", "http://", "https://")) and os.path.isfile(value):
            # the server would only say it knows no such file id
            raise ValidationFailed(422, "INVALID_REQUEST", f"{value!r} is a file on this machine, not a file id",
                                   hint="upload it first: pass what client.upload(path) returns")
        return value
    if isinstance(value, FileInfo):
        return value.file_id
    if isinstance(value, OutputInfo):  # its url: /api/v1/jobs/{job_id}/outputs/{name}
        job_id, _, name = value.url.rsplit("/jobs/", 1)[-1].partition("/outputs/")
        return f"{job_id}/{name}"
    job = value if isinstance(value, JobView) else value.view
    return f"{job.job_id}/{main_output(job).name}"


def main_output(job: JobView) -> OutputInfo:
    """The job's model file: model.glb when it made one, else its first model file, else its first output."""
    if not job.outputs:
        raise ValueError(f"job {job.job_id} has no outputs (it is {job.status})")
    models = [o for o in job.outputs if o.name.startswith("model.")] or job.outputs
    return next((o for o in models if o.format == "glb"), models[0])


@dataclass(frozen=True)
class Submission:
    path: str
    body: dict[str, Any]
    headers: dict[str, str]


def validated(model: type[BaseModel], fields: Mapping[str, Any]) -> dict[str, Any]:
    """A request body checked by the server's own model before it is sent (ValidationFailed if it fails)."""
    try:
        return model.model_validate(dict(fields)).model_dump(mode="json", exclude_none=True)
    except ValidationError as e:
        raise _validation_failed(e, model) from None


def conversion(job_id: str, fields: Mapping[str, Any]) -> Submission:
    return submission(Feature(f"/jobs/{job_id}/convert", ConvertRequest), fields)


def submission(feature: Feature, fields: Mapping[str, Any]) -> Submission:
    """The body, validated by the server's own request model before anything is sent, and the key."""
    body = dict(fields)
    key = body.pop("idempotency_key", None) or str(uuid.uuid4())
    if "images" in body:
        body["images"] = [_ref(v) for v in body["images"]]
    if body.get("views"):
        body["views"] = {name: _ref(v) for name, v in body["views"].items()}
    if "mesh" in body:
        body["mesh"] = _ref(body["mesh"])
    try:
        request = feature.request.model_validate(body)
    except ValidationError as e:
        raise _validation_failed(e, feature.request) from None
    return Submission(feature.path, request.model_dump(mode="json", exclude_unset=True),
                      {"Idempotency-Key": key})


def _validation_failed(e: ValidationError, model: type[BaseModel]) -> ValidationFailed:
    first = e.errors()[0]
    unsupported = unsupported_format(model.model_fields, first)
    if unsupported is not None:  # as the server would answer it
        return ValidationFailed(422, "UNSUPPORTED_OUTPUT_FORMAT", unsupported.message, details=unsupported.details,
                                hint=unsupported.hint)
    where = ".".join(str(p) for p in first["loc"]) or "request"
    return ValidationFailed(422, "INVALID_REQUEST", f"{where}: {first['msg']}",
                            details={"errors": e.errors(include_url=False, include_context=False)})


Uploadable: TypeAlias = "str | os.PathLike[str] | bytes | IO[bytes] | Image"


def upload_file(file: Uploadable, filename: str | None) -> tuple[str, IO[bytes], bool]:
    """``(filename, stream, opened_here)`` for a path, bytes, a binary file or a PIL image (sent as PNG)."""
    if isinstance(file, (str, os.PathLike)):
        path = Path(file)
        return filename or path.name, open(path, "rb"), True
    if isinstance(file, bytes):
        return filename or "upload", io.BytesIO(file), True
    if hasattr(file, "read"):
        stream = cast(IO[bytes], file)
        return filename or Path(str(getattr(stream, "name", "upload"))).name, stream, False
    image = file  # a PIL image; PIL is not imported to find out
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    buffer.seek(0)
    return filename or "image.png", buffer, True


# -- jobs ------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class JobEvent:
    """A change of the job: ``kind`` is the server's event name (``status``, ``progress``), or ``poll`` when the
    stream had broken and the state was read with GET; ``id`` is the job's version (the SSE event id)."""

    kind: str
    id: int | None
    job: JobView

    @property
    def is_final(self) -> bool:
        return self.job.status in FINAL_STATES


def job_event(sse: ServerSentEvent) -> JobEvent | None:
    """The event, or None for one that carries no job (a kind this SDK does not know)."""
    try:
        job = JobView.model_validate_json(sse.data)
    except ValidationError:
        return None
    return JobEvent(sse.event, int(sse.id) if sse.id and sse.id.isdigit() else None, job)


def outcome(job: JobView) -> JobView:
    """The job if it succeeded; otherwise the error that says how it ended, or that it has not."""
    if job.status == "succeeded":
        return job
    if job.status == "failed":
        raise JobFailed(job)
    if job.status == "cancelled":
        raise JobCancelled(job)
    raise JobNotFinished(job)


ProgressCallback = Callable[[JobView], object]

# The filters of a listing: the API's enums, or their values as plain strings (checked by mypy all the same).
StatusFilter: TypeAlias = "JobStatus | Literal['queued', 'running', 'succeeded', 'failed', 'cancelled']"
FeatureFilter: TypeAlias = ("JobFeature | Literal['mesh_generation', 'texture_generation', 'segmentation', "
                            "'auto_rigging']")


class Deadline:
    """The end of a ``wait(timeout)``; None: no end."""

    def __init__(self, timeout: float | None):
        self.timeout = timeout
        self._at = None if timeout is None else time.monotonic() + timeout

    def remaining(self) -> float | None:
        return None if self._at is None else max(0.0, self._at - time.monotonic())

    def cap(self, seconds: float) -> float:
        """``seconds``, or less if the deadline comes sooner."""
        left = self.remaining()
        return seconds if left is None else min(seconds, left)

    def check(self, job: JobView) -> None:
        if self._at is not None and time.monotonic() >= self._at:
            raise WaitTimeout(job, self.timeout or 0.0)


J = TypeVar("J")


@dataclass(frozen=True)
class Page(Generic[J]):
    """One page of a listing, newest first; ``next_cursor`` asks for the next (None: this was the last)."""

    items: list[J]
    next_cursor: str | None


# -- downloads -------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Target:
    output: OutputInfo
    dest: Path  # where it goes; in a directory, the name the server gives the download replaces this one's
    in_directory: bool


def download_targets(job: JobView, to: str | os.PathLike[str], output: str | None) -> list[Target]:
    """Where each output goes. A directory (one that exists, or a path with no suffix or ending in a separator)
    takes every output, or only ``output``, under the name the server gives it (``chair.glb``,
    ``chair-preview.png``: after the upload the job worked on, else the job); a file path takes one: ``output``,
    else the model file in the format its suffix names, else the job's model file."""
    outputs = outcome(job).outputs
    dest = Path(to)
    chosen = outputs
    if output is not None:
        chosen = [o for o in outputs if o.name == output]
        if not chosen:
            raise ValueError(f"job {job.job_id} has no output {output!r}; it has {[o.name for o in outputs]}")
    if dest.is_dir() or not dest.suffix or str(to).endswith((os.sep, "/")):
        return [Target(o, dest / o.name, True) for o in chosen]
    if output is None:
        suffix = dest.suffix.lower().lstrip(".")
        models = [o for o in outputs if o.name.startswith("model.")]
        chosen = [next((o for o in models if o.format == suffix or o.name.endswith(f".{suffix}")), main_output(job))]
    return [Target(chosen[0], dest, False)]


def attachment_name(response: httpx.Response) -> str | None:
    """The file name a response's Content-Disposition gives (RFC 6266, RFC 2231's filename* too), reduced to a
    plain name: nothing the server sends can point outside the directory."""
    value = response.headers.get("content-disposition")
    if not value:
        return None
    message = email.message.Message()
    message["content-disposition"] = value
    name = Path((message.get_filename() or "").replace("\\", "/")).name
    return name if name and not name.startswith(".") else None


class PartialFile:
    """A download in ``<dest>.part``, hashed as it grows, that becomes ``dest`` only when it is whole."""

    def __init__(self, target: Target):
        self.output, self.dest, self.in_directory = target.output, target.dest, target.in_directory
        self.part = self.dest.with_name(self.dest.name + ".part")
        self.dest.parent.mkdir(parents=True, exist_ok=True)
        output = self.output
        self.sha = hashlib.sha256()
        self.size = 0
        if self.part.exists():  # a download an earlier process left: resumed if it is a prefix of this output
            with open(self.part, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    self.sha.update(chunk)
                    self.size += len(chunk)
            if self.size > output.size:
                self.restart()

    @property
    def complete(self) -> bool:
        return self.size == self.output.size

    def range_headers(self) -> dict[str, str]:
        if not self.size:
            return {}
        # If-Range: the server sends the whole file (200) if it is not the one the part was cut from
        return {"Range": f"bytes={self.size}-", "If-Range": f'"{self.output.sha256}"'}

    def restart(self) -> None:
        self.part.write_bytes(b"")
        self.sha, self.size = hashlib.sha256(), 0

    def open(self, response: httpx.Response) -> IO[bytes]:
        """The file to append to, after this answer (206: the rest; 200: all of it)."""
        if self.in_directory:
            self.dest = self.dest.with_name(attachment_name(response) or self.output.name)
        if response.status_code != 206:
            self.restart()
        return open(self.part, "ab")

    def write(self, f: IO[bytes], chunk: bytes) -> None:
        f.write(chunk)
        self.sha.update(chunk)
        self.size += len(chunk)

    def finish(self) -> Path:
        from pocket3d.client.errors import DownloadFailed

        if self.size != self.output.size or self.sha.hexdigest() != self.output.sha256:
            self.part.unlink(missing_ok=True)
            raise DownloadFailed(f"{self.output.name}: got {self.size} bytes with SHA-256 {self.sha.hexdigest()}, "
                                 f"expected {self.output.size} bytes with {self.output.sha256}")
        os.replace(self.part, self.dest)
        return self.dest


M = TypeVar("M", bound=BaseModel)


def parse(model: type[M], response: httpx.Response) -> M:
    try:
        return model.model_validate_json(response.content)
    except ValidationError as e:
        from pocket3d import __version__

        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "the body"
        raise ServerMismatch(
            f"{response.request.method} {response.request.url.path}: the server's answer does not fit this SDK's "
            f"{model.__name__} ({where}: {first['msg']}): the server runs another release of pocket3d than this "
            f"SDK ({__version__}); use the same release on both sides") from None
