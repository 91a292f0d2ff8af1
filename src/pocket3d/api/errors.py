"""One error body for every 4xx and 5xx: ``{error_code, message, details, timestamp, request_id}``, plus ``hint``
(what to do next) where there is an obvious next step."""

from __future__ import annotations

import difflib
import logging
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException as StarletteHTTPException

from pocket3d.api import redact, schemas
from pocket3d.api.middleware import TOO_LARGE_HINT, BodyTooLarge, current_request_id
from pocket3d.errors import ErrorCode, Pocket3DError, storage_failure

log = logging.getLogger(__name__)

_STATUS_CODES = {
    400: ErrorCode.INVALID_REQUEST, 401: ErrorCode.UNAUTHORIZED, 403: ErrorCode.FORBIDDEN,
    404: ErrorCode.NOT_FOUND, 405: ErrorCode.METHOD_NOT_ALLOWED, 413: ErrorCode.REQUEST_TOO_LARGE,
    415: ErrorCode.UNSUPPORTED_MEDIA_TYPE, 422: ErrorCode.INVALID_REQUEST,
}


def error_response(status: int, code: str, message: str, details: dict[str, Any] | None = None,
                   headers: dict[str, str] | None = None, hint: str | None = None) -> JSONResponse:
    body = {"error_code": str(code), "message": message, "details": details or {},
            "timestamp": datetime.now(UTC).isoformat(), "request_id": current_request_id()}
    if hint:
        body["hint"] = hint
    return JSONResponse(body, status_code=status, headers=headers)


# Field names other 3D APIs use, and what this API calls them.
_FOREIGN_FIELDS = {"prompt": "text_prompt", "image": "images", "image_url": "images", "image_token": "images",
                   "file_token": "images", "model_url": "mesh", "input": "mesh", "format": "output_format",
                   "model": "model_preference", "model_version": "model_preference", "texture": "text_prompt",
                   "formats": "output_formats"}


def _validation_hint(request: Request, errors: list[dict[str, Any]]) -> str | None:
    first = errors[0] if errors else None
    if first is None:
        return None
    field = first["loc"][-1] if first["loc"] else ""
    if first["type"] == "extra_forbidden" and first["loc"][:1] == ["body"]:
        known = _body_fields(request)
        guess = _FOREIGN_FIELDS.get(field)
        if guess not in known:
            close = difflib.get_close_matches(field, known, n=1, cutoff=0.6)
            guess = close[0] if close else None
        fields = ", ".join(sorted(known)) if known else None
        if guess:
            return f"did you mean {guess!r}?" + (f" This request takes: {fields}." if fields else "")
        return f"this request takes: {fields}" if fields else None
    if first["type"] == "literal_error" and {"output_format", "output_formats"} & set(first["loc"]):
        offered = schemas.offered_formats(_body_model_fields(request))
        return f"ask for one of {', '.join(offered)}" if offered else None
    if first["type"] == "missing" and first["loc"] == ["body"]:
        return "send the request as JSON with Content-Type: application/json; /docs has an example for each route"
    return None


def _body_fields(request: Request) -> list[str]:
    """The JSON body's field names of the route that was called (empty when it takes none)."""
    return list(_body_model_fields(request))


def _body_model_fields(request: Request) -> dict[str, Any]:
    body_field = getattr(request.scope.get("route"), "body_field", None)
    body = getattr(getattr(body_field, "field_info", None), "annotation", None)
    fields = getattr(body, "model_fields", None)
    return fields if isinstance(fields, dict) else {}


def _unsupported_format(request: Request, error: dict[str, Any]) -> JSONResponse | None:
    """The same 422 UNSUPPORTED_OUTPUT_FORMAT as a model or a conversion that cannot write the format."""
    found = schemas.unsupported_format(_body_model_fields(request), error)
    if found is None:
        return None
    return error_response(422, ErrorCode.UNSUPPORTED_OUTPUT_FORMAT, found.message, found.details, hint=found.hint)


def _jsonable_errors(errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for e in errors:
        out.append({"loc": [str(p) for p in e.get("loc", ())], "msg": e.get("msg", ""), "type": e.get("type", "")})
    return out


def install_handlers(app: FastAPI) -> None:
    @app.exception_handler(Pocket3DError)
    async def _pocket3d(request: Request, exc: Pocket3DError) -> JSONResponse:
        if redact.sees_everything(request):
            return error_response(exc.http_status, exc.code, exc.message, exc.details, exc.headers, exc.hint)
        return error_response(exc.http_status, exc.code, redact.text(exc.message), redact.deep(exc.details),
                              exc.headers, redact.text(exc.hint) if exc.hint else None)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = _jsonable_errors(list(exc.errors()))
        if any(e["type"] == "json_invalid" for e in errors):
            return error_response(400, ErrorCode.INVALID_JSON, "the request body is not valid JSON",
                                  {"errors": errors}, hint="check the body's quoting and commas, and send "
                                  "Content-Type: application/json")
        raw = list(exc.errors())
        unsupported = _unsupported_format(request, raw[0]) if raw else None
        if unsupported is not None:
            return unsupported
        first = errors[0] if errors else {"loc": [], "msg": "invalid request", "type": ""}
        where = ".".join(p for p in first["loc"] if p != "body") or "request"
        return error_response(422, ErrorCode.INVALID_REQUEST, f"{where}: {first['msg']}", {"errors": errors},
                              hint=_validation_hint(request, errors))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if isinstance(exc, BodyTooLarge):
            return error_response(413, ErrorCode.REQUEST_TOO_LARGE, exc.detail, {"limit": exc.limit},
                                  headers={"Connection": "close"}, hint=TOO_LARGE_HINT)
        code = _STATUS_CODES.get(exc.status_code, ErrorCode.INVALID_REQUEST)
        message = exc.detail if isinstance(exc.detail, str) else code.value
        headers = getattr(exc, "headers", None)
        hint = None
        if code == ErrorCode.NOT_FOUND:
            from pocket3d.api.compat import missed_mount_hint  # compat's routers import this module's neighbours

            hint = "/docs lists every route" if request.url.path.startswith("/api/v1/") else \
                missed_mount_hint(request.url.path) or "the API is under /api/v1; /docs lists every route"
        elif code == ErrorCode.METHOD_NOT_ALLOWED and headers and headers.get("Allow"):
            hint = f"this path takes {headers['Allow']}"
        return error_response(exc.status_code, code, message, headers=headers, hint=hint)

    async def _storage(request: Request, exc: Exception) -> JSONResponse:
        """A full or failing disk, or a store that cannot write: 503 with Retry-After, one line in the log, and
        readiness told; any other such error goes on to the 500 below."""
        reason = storage_failure(exc)
        if reason is None:
            raise exc
        log.warning("%s %s: storage unavailable: %s", request.method, request.url.path, reason)
        request.app.state.node.storage_health.failed(reason)
        message = "the server cannot store anything right now (its disk is full or failing); try again later"
        return error_response(503, ErrorCode.STORAGE_UNAVAILABLE, message, headers={"Retry-After": "30"},
                              hint="GET /api/v1/system/ready says when the server is ready again")

    app.add_exception_handler(OSError, _storage)
    app.add_exception_handler(SQLAlchemyError, _storage)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(500, ErrorCode.INTERNAL_ERROR, "internal error; quote the request_id when reporting it")
