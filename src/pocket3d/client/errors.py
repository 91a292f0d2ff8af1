"""What the SDK raises: one class per kind of error a caller handles differently, chosen by the server's
``error_code`` (the table ``ERROR_CLASSES``), else by the HTTP status (``STATUS_CLASSES``).

Every class derives from :class:`Pocket3DError`. An error the server answered is an :class:`APIError` carrying
its code, message, details, hint and request id; how a job ended is a :class:`JobError` carrying the job.
"""

from __future__ import annotations

import email.utils
import time
from typing import TYPE_CHECKING, Any

import httpx

if TYPE_CHECKING:
    from pocket3d.api.schemas import JobView


class Pocket3DError(Exception):
    """The base of everything the SDK raises."""


# -- the connection --------------------------------------------------------------------------------------------

class ConnectionFailed(Pocket3DError):
    """The request got no answer: the connection broke, or timed out, after the retries that were safe."""


class ServerUnreachable(ConnectionFailed):
    """No server accepted the connection at the configured URL."""

    def __init__(self, url: str, cause: BaseException | None = None):
        self.url = url
        super().__init__(f"no pocket3d server answered at {url}: start one with `pocket3d serve` (`make serve` in "
                         "a checkout), or point POCKET3D_URL (or --url) at a running one"
                         + (f" ({cause})" if cause and str(cause) else ""))


class ServerMismatch(Pocket3DError):
    """The server answered with a body that does not fit this SDK's models of the API: it runs another version of
    pocket3d (the SDK and the server share their models, so they should be the same release)."""


# -- what the server answered ----------------------------------------------------------------------------------

class APIError(Pocket3DError):
    """The server refused the request; ``code`` is its stable ``error_code``."""

    def __init__(self, status: int, code: str, message: str, *, details: dict[str, Any] | None = None,
                 hint: str | None = None, request_id: str | None = None, retry_after: float | None = None):
        super().__init__(f"{code}: {message}" + (f" ({hint})" if hint else ""))
        self.status = status
        self.code = code
        self.message = message
        self.details = details or {}
        self.hint = hint
        self.request_id = request_id
        self.retry_after = retry_after  # seconds, from the Retry-After header


class ValidationFailed(APIError):
    """The request is malformed or a value is out of range (checked by the SDK itself before sending, with the
    server's own request models, or by the server)."""


class Unauthorized(APIError):
    """No API key, or one that is not valid (set POCKET3D_API_KEY)."""


class Forbidden(APIError):
    """The key is valid but may not do this."""


class NotFound(APIError):
    """No such job, file or output (or it belongs to another owner)."""


class Conflict(APIError):
    """The request conflicts with the state of what it names (a finished job cannot be cancelled)."""


class IdempotencyKeyReused(Conflict):
    """The Idempotency-Key was already used for another request; ``details["job_id"]`` is the job it made."""


class Gone(APIError):
    """It existed and expired."""


class OutputExpired(Gone):
    """The job's outputs were deleted after its ``expires_at``."""


class FileExpired(Gone):
    """The upload is past its ``expires_at``: upload it again."""


class PayloadTooLarge(APIError):
    """A file, an image, a mesh or the request body is over the server's limit."""


class UnsupportedMediaType(APIError):
    """The uploaded file is not an image or mesh format the server reads."""


class RateLimited(APIError):
    """Too many requests or jobs at once for this key; retry after ``retry_after`` seconds."""


class ServiceUnavailable(APIError):
    """The server cannot take this now (not ready, storage down, the model not available here)."""


class QueueFull(ServiceUnavailable):
    """The queue holds as many jobs as the server allows; retry after ``retry_after`` seconds."""


class ServerError(APIError):
    """The server failed unexpectedly; quote ``request_id`` when reporting it."""


# The server's error codes (pocket3d.errors.ErrorCode) whose callers act differently from their status's class.
ERROR_CLASSES: dict[str, type[APIError]] = {
    "IDEMPOTENCY_KEY_REUSED": IdempotencyKeyReused,
    "QUEUE_FULL": QueueFull,
    "RATE_LIMITED": RateLimited,
    "CONCURRENCY_LIMITED": RateLimited,
    "OUTPUT_EXPIRED": OutputExpired,
    "FILE_EXPIRED": FileExpired,
    "INVALID_JSON": ValidationFailed,
    "EMPTY_UPLOAD": ValidationFailed,
}

STATUS_CLASSES: dict[int, type[APIError]] = {
    400: ValidationFailed, 401: Unauthorized, 403: Forbidden, 404: NotFound, 409: Conflict, 410: Gone,
    413: PayloadTooLarge, 415: UnsupportedMediaType, 422: ValidationFailed, 429: RateLimited,
    500: ServerError, 502: ServiceUnavailable, 503: ServiceUnavailable, 504: ServiceUnavailable,
}


def error_class(status: int, code: str | None) -> type[APIError]:
    if code in ERROR_CLASSES:
        return ERROR_CLASSES[code]
    return STATUS_CLASSES.get(status, ServerError if status >= 500 else APIError)


def api_error(response: httpx.Response) -> APIError:
    """The error a non-2xx response carries; the body must have been read."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict) or not isinstance(body.get("error_code"), str):
        # not pocket3d's error format: a proxy in the way, or not a pocket3d server
        body = {"error_code": f"HTTP_{response.status_code}",
                "message": response.text[:200].strip() or response.reason_phrase}
    code = body["error_code"]
    return error_class(response.status_code, code)(
        response.status_code, code, str(body.get("message", "")), details=body.get("details") or {},
        hint=body.get("hint"), request_id=body.get("request_id") or response.headers.get("x-request-id"),
        retry_after=parse_retry_after(response.headers.get("retry-after")))


def parse_retry_after(value: str | None) -> float | None:
    """Retry-After as seconds from now: delta-seconds or an HTTP date (RFC 9110 10.2.3)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


# -- how a job ended -------------------------------------------------------------------------------------------

class JobError(Pocket3DError):
    """The job did not succeed; ``job`` is its last state."""

    def __init__(self, job: JobView, message: str):
        super().__init__(message)
        self.job = job


class JobFailed(JobError):
    """The job failed; ``code`` and ``message`` are the job's ``error`` (MODEL_ERROR, OUT_OF_MEMORY, TIMEOUT…)."""

    def __init__(self, job: JobView):
        self.code = job.error.code if job.error else "UNKNOWN"
        self.message = job.error.message if job.error else ""
        super().__init__(job, f"job {job.job_id} failed: {self.code}: {self.message}")


class JobCancelled(JobError):
    def __init__(self, job: JobView):
        super().__init__(job, f"job {job.job_id} was cancelled")


class JobNotFinished(JobError):
    """Asked for what only a finished job has (its outputs) while it is still queued or running."""

    def __init__(self, job: JobView):
        super().__init__(job, f"job {job.job_id} is {job.status}; wait for it first")


class WaitTimeout(JobError, TimeoutError):
    """``wait(timeout)`` ran out; the job goes on (``job`` is its last state seen)."""

    def __init__(self, job: JobView, timeout: float):
        super().__init__(job, f"job {job.job_id} is still {job.status} after {timeout:g} s")


class DownloadFailed(Pocket3DError):
    """A downloaded file does not match the size or SHA-256 the job lists for it."""
