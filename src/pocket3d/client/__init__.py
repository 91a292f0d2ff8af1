"""pocket3d's Python SDK: :class:`Client` (blocking) and :class:`AsyncClient` (asyncio) for a pocket3d server.

>>> from pocket3d.client import Client
>>> with Client() as p3d:                                  # POCKET3D_URL, POCKET3D_API_KEY
...     image = p3d.upload("chair.png")
...     job = p3d.generate_mesh(images=[image], quality="high")
...     job.wait(on_progress=lambda j: print(f"{j.progress:.0f}%"))
...     job.download("chair.glb")

Requests and answers are the server's own models (``pocket3d.api.schemas``). Importing this package loads
httpx and pydantic, not the server.
"""

from pocket3d.api.schemas import (
    Caller,
    FileInfo,
    Health,
    JobFeature,
    JobStatus,
    JobView,
    ModelInfo,
    ModelList,
    OutputInfo,
    StageInfo,
)
from pocket3d.client._async import AsyncClient, AsyncFiles, AsyncJob, AsyncJobs, AsyncWebhooks
from pocket3d.client._core import JobEvent, Page
from pocket3d.client._sync import Client, Files, Job, Jobs, Webhooks
from pocket3d.client.errors import (
    APIError,
    Conflict,
    ConnectionFailed,
    DownloadFailed,
    FileExpired,
    Forbidden,
    Gone,
    IdempotencyKeyReused,
    JobCancelled,
    JobError,
    JobFailed,
    JobNotFinished,
    NotFound,
    OutputExpired,
    PayloadTooLarge,
    Pocket3DError,
    QueueFull,
    RateLimited,
    ServerError,
    ServerMismatch,
    ServerUnreachable,
    ServiceUnavailable,
    Unauthorized,
    UnsupportedMediaType,
    ValidationFailed,
    WaitTimeout,
)

__all__ = [
    "APIError", "AsyncClient", "AsyncFiles", "AsyncJob", "AsyncJobs", "AsyncWebhooks", "Caller", "Client", "Conflict",
    "ConnectionFailed", "DownloadFailed", "FileExpired", "FileInfo", "Files", "Forbidden", "Gone", "Health",
    "IdempotencyKeyReused", "Job", "JobCancelled", "JobError", "JobEvent", "JobFailed", "JobFeature",
    "JobNotFinished", "JobStatus",
    "JobView", "Jobs", "ModelInfo", "ModelList", "NotFound", "OutputExpired", "OutputInfo", "Page",
    "PayloadTooLarge", "Pocket3DError", "QueueFull", "RateLimited", "ServerError", "ServerMismatch",
    "ServerUnreachable", "ServiceUnavailable", "StageInfo", "Unauthorized", "UnsupportedMediaType",
    "ValidationFailed", "WaitTimeout", "Webhooks",
]
