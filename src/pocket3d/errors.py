"""Stable error codes shared by every layer.

Clients branch on ``error_code``, so a code, once published, keeps its meaning. The HTTP status that goes
with a code lives here too, so a code raised deep in a layer maps to the same answer everywhere.
"""

from __future__ import annotations

import errno
import os
import re
import sqlite3
from enum import StrEnum
from typing import Any


class ErrorCode(StrEnum):
    # request shape
    INVALID_REQUEST = "INVALID_REQUEST"
    INVALID_JSON = "INVALID_JSON"
    INVALID_PARAMETERS = "INVALID_PARAMETERS"
    REQUEST_TOO_LARGE = "REQUEST_TOO_LARGE"
    METHOD_NOT_ALLOWED = "METHOD_NOT_ALLOWED"
    NOT_FOUND = "NOT_FOUND"
    # auth
    UNAUTHORIZED = "UNAUTHORIZED"
    FORBIDDEN = "FORBIDDEN"
    # files and inputs
    EMPTY_UPLOAD = "EMPTY_UPLOAD"
    FILE_TOO_LARGE = "FILE_TOO_LARGE"
    UNSUPPORTED_MEDIA_TYPE = "UNSUPPORTED_MEDIA_TYPE"
    INVALID_IMAGE = "INVALID_IMAGE"
    IMAGE_TOO_LARGE = "IMAGE_TOO_LARGE"
    INVALID_MESH = "INVALID_MESH"
    MESH_TOO_LARGE = "MESH_TOO_LARGE"
    INVALID_DATA_URI = "INVALID_DATA_URI"
    FILE_NOT_FOUND = "FILE_NOT_FOUND"
    FILE_EXPIRED = "FILE_EXPIRED"  # an upload past its expires_at (a deleted one is FILE_NOT_FOUND)
    INVALID_ARCHIVE = "INVALID_ARCHIVE"  # a zip upload that is unsafe or holds no usable mesh
    # models
    UNKNOWN_MODEL = "UNKNOWN_MODEL"
    MODEL_INPUT_MISMATCH = "MODEL_INPUT_MISMATCH"
    NO_MODEL_FOR_REQUEST = "NO_MODEL_FOR_REQUEST"
    MODEL_UNAVAILABLE = "MODEL_UNAVAILABLE"
    UNSUPPORTED_OUTPUT_FORMAT = "UNSUPPORTED_OUTPUT_FORMAT"
    FORMAT_UNAVAILABLE = "FORMAT_UNAVAILABLE"
    EXPORT_FAILED = "EXPORT_FAILED"
    # jobs
    JOB_NOT_FOUND = "JOB_NOT_FOUND"
    JOB_NOT_CANCELLABLE = "JOB_NOT_CANCELLABLE"
    OUTPUT_NOT_FOUND = "OUTPUT_NOT_FOUND"
    OUTPUT_EXPIRED = "OUTPUT_EXPIRED"
    OUTPUT_NOT_READY = "OUTPUT_NOT_READY"  # a job's output named as an input before that job has succeeded
    RANGE_NOT_SATISFIABLE = "RANGE_NOT_SATISFIABLE"
    QUEUE_FULL = "QUEUE_FULL"
    CONCURRENCY_LIMITED = "CONCURRENCY_LIMITED"  # this owner has scheduler.max_jobs_per_owner jobs waiting or running
    IDEMPOTENCY_KEY_REUSED = "IDEMPOTENCY_KEY_REUSED"  # an Idempotency-Key sent again with another request
    # webhooks
    INPUT_URL_FORBIDDEN = "INPUT_URL_FORBIDDEN"  # URL inputs are off, or the URL leads where pocket3d may not go
    INPUT_URL_FAILED = "INPUT_URL_FAILED"  # fetching an input URL failed: no answer, an error, not an image
    WEBHOOK_URL_INVALID = "WEBHOOK_URL_INVALID"  # not an http(s) URL with a host that resolves
    WEBHOOK_URL_FORBIDDEN = "WEBHOOK_URL_FORBIDDEN"  # resolves to a loopback, private or metadata address
    WEBHOOK_NOT_FOUND = "WEBHOOK_NOT_FOUND"
    WEBHOOK_LIMIT_REACHED = "WEBHOOK_LIMIT_REACHED"  # the owner has webhooks.max_endpoints already
    # why a job failed (job.error.code)
    MODEL_ERROR = "MODEL_ERROR"
    INVALID_INPUT = "INVALID_INPUT"
    WORKER_LOST = "WORKER_LOST"  # the node running the stage stopped renewing its lease, max_attempts times
    WORKER_CRASHED = "WORKER_CRASHED"  # the device worker process died (a crash, a kill) max_attempts times
    OUT_OF_MEMORY = "OUT_OF_MEMORY"  # the model ran out of device memory, again after the others were evicted
    TIMEOUT = "TIMEOUT"
    # the service
    NOT_READY = "NOT_READY"
    SERVER_BUSY = "SERVER_BUSY"  # a bounded resource (Blender's processes) stayed busy; retry after Retry-After
    STORAGE_UNAVAILABLE = "STORAGE_UNAVAILABLE"  # the job store or the artifact store failed a read or write
    INTERNAL_ERROR = "INTERNAL_ERROR"


HTTP_STATUS: dict[ErrorCode, int] = {
    ErrorCode.INVALID_REQUEST: 422,
    ErrorCode.INVALID_JSON: 400,
    ErrorCode.INVALID_PARAMETERS: 422,
    ErrorCode.REQUEST_TOO_LARGE: 413,
    ErrorCode.METHOD_NOT_ALLOWED: 405,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.UNAUTHORIZED: 401,
    ErrorCode.FORBIDDEN: 403,
    ErrorCode.EMPTY_UPLOAD: 400,
    ErrorCode.FILE_TOO_LARGE: 413,
    ErrorCode.UNSUPPORTED_MEDIA_TYPE: 415,
    ErrorCode.INVALID_IMAGE: 422,
    ErrorCode.IMAGE_TOO_LARGE: 413,
    ErrorCode.INVALID_MESH: 422,
    ErrorCode.MESH_TOO_LARGE: 413,
    ErrorCode.INVALID_DATA_URI: 422,
    ErrorCode.FILE_NOT_FOUND: 404,
    ErrorCode.FILE_EXPIRED: 410,
    ErrorCode.INVALID_ARCHIVE: 422,
    ErrorCode.UNKNOWN_MODEL: 422,
    ErrorCode.MODEL_INPUT_MISMATCH: 422,
    ErrorCode.NO_MODEL_FOR_REQUEST: 422,
    ErrorCode.MODEL_UNAVAILABLE: 503,
    ErrorCode.UNSUPPORTED_OUTPUT_FORMAT: 422,
    ErrorCode.FORMAT_UNAVAILABLE: 422,
    ErrorCode.JOB_NOT_FOUND: 404,
    ErrorCode.JOB_NOT_CANCELLABLE: 409,
    ErrorCode.OUTPUT_NOT_FOUND: 404,
    ErrorCode.OUTPUT_EXPIRED: 410,
    ErrorCode.OUTPUT_NOT_READY: 409,
    ErrorCode.RANGE_NOT_SATISFIABLE: 416,
    ErrorCode.QUEUE_FULL: 503,
    ErrorCode.CONCURRENCY_LIMITED: 429,
    ErrorCode.IDEMPOTENCY_KEY_REUSED: 409,
    ErrorCode.INPUT_URL_FORBIDDEN: 422,
    ErrorCode.INPUT_URL_FAILED: 422,
    ErrorCode.WEBHOOK_URL_INVALID: 422,
    ErrorCode.WEBHOOK_URL_FORBIDDEN: 422,
    ErrorCode.WEBHOOK_NOT_FOUND: 404,
    ErrorCode.WEBHOOK_LIMIT_REACHED: 409,
    ErrorCode.NOT_READY: 503,
    ErrorCode.SERVER_BUSY: 503,
    ErrorCode.STORAGE_UNAVAILABLE: 503,
    ErrorCode.INTERNAL_ERROR: 500,
}


class Pocket3DError(Exception):
    """An error with a stable code; the API turns it into the error body, a worker into ``job.error``.

    ``message`` says what is wrong; ``hint``, where there is an obvious next step, says what to do about it
    ("upload it with POST /api/v1/files, or send a data: URI"), in words a client can show as they are.
    """

    def __init__(self, code: ErrorCode, message: str, details: dict[str, Any] | None = None,
                 headers: dict[str, str] | None = None, *, hint: str | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details or {}
        self.headers = headers or {}
        self.hint = hint

    @property
    def http_status(self) -> int:
        return HTTP_STATUS.get(self.code, 400)


# errno values that mean "the disk cannot take this write": full, over a size limit or quota, read-only, failing
_STORAGE_ERRNOS = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EROFS, errno.EIO}
_STORAGE_MESSAGES = ("database or disk is full", "disk i/o error", "no space left on device", "file too large",
                     "database is locked")
_STORAGE_SQLSTATES = {"53100", "53000", "58030"}  # PostgreSQL: disk_full, insufficient_resources, io_error
# PostgreSQL going away: the server shut down or restarts (57P01-57P03), or a connection failure (class 08)
_UNREACHABLE_SQLSTATES = {"57P01", "57P02", "57P03"}


def storage_failure(error: BaseException) -> str | None:
    """Why ``error`` is a failure to write to the disk or the store (full, over a limit, failing, or a database
    that cannot be reached: it restarts, the network dropped), or None.

    Walks the chain of causes (SQLAlchemy wraps the driver's error in ``orig``), so an error raised deep in a
    layer is recognised wherever it surfaces."""
    seen: set[int] = set()
    pending: list[BaseException | None] = [error]
    while pending:
        e = pending.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in _STORAGE_ERRNOS:
            return e.strerror or os.strerror(e.errno)
        if getattr(e, "sqlstate", None) in _STORAGE_SQLSTATES or getattr(e, "pgcode", None) in _STORAGE_SQLSTATES:
            return str(e).splitlines()[0] if str(e) else "the database cannot write"
        if _database_unreachable(e):
            return "the database is unreachable: " + (str(e).splitlines()[0] if str(e) else type(e).__name__)
        if isinstance(e, sqlite3.Error):
            text = str(e).lower()
            if any(m in text for m in _STORAGE_MESSAGES):
                return str(e)
        pending.extend([e.__cause__, e.__context__, getattr(e, "orig", None)])
    return None


class WarningCode(StrEnum):
    """Codes of a job's ``warnings``: the job succeeded, but something was done other than asked. Stable too."""

    ROTATED_TO_Y_UP = "ROTATED_TO_Y_UP"  # a mesh input was not Y-up: it was turned before any model saw it
    UNKNOWN_OBJECT = "UNKNOWN_OBJECT"  # the text model knew no object in the prompt and built a generic shape
    VIEW_LEFT_OUT = "VIEW_LEFT_OUT"  # a view disagreed with the others and was not used
    OPEN_MESH = "OPEN_MESH"  # the mesh has holes or is a sheet: it was treated as a thickened surface
    FLAT_MESH = "FLAT_MESH"  # the mesh is (nearly) flat: it has hardly a volume to work with
    CUTOUT_FALLBACK = "CUTOUT_FALLBACK"  # a weaker cut-out did the work: GrabCut for U²-Netp, U²-Netp for U²-Net


# An absolute path of two or more parts, not inside a word or a URL ("http://host/a/b" keeps its path).
_SERVER_PATH = re.compile(r"(?<![\w.:/~-])/(?:[\w.+~@-]+/)+[\w.+~@-]*")
_API_ROUTES = ("/api/", "/docs", "/redoc")  # the API's own routes are not server paths
HIDDEN_PATH = "<server path>"


def hide_server_paths(text: str) -> str:
    """``text`` with the server's file paths (a checkout at /opt/TRELLIS.2, the data directory) in a message made
    for someone who is not its operator replaced by ``<server path>``."""
    return _SERVER_PATH.sub(lambda m: m.group(0) if m.group(0).startswith(_API_ROUTES) else HIDDEN_PATH, text)


def _database_unreachable(e: BaseException) -> bool:
    """A PostgreSQL connection that failed or broke (psycopg's OperationalError, SQLAlchemy's invalidated
    connection), as opposed to a statement the database refused."""
    sqlstate = getattr(e, "sqlstate", None) or ""
    if sqlstate in _UNREACHABLE_SQLSTATES or sqlstate.startswith("08"):
        return True
    if getattr(e, "connection_invalidated", False):
        return True
    kind = type(e)
    return kind.__name__ == "OperationalError" and kind.__module__.startswith("psycopg")
