"""What only an admin sees: server paths in messages (a checkout at /opt/TRELLIS.2, a data directory), and the
processes behind the devices. Every other caller gets the same answer with ``<server path>`` in their place."""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

from starlette.requests import HTTPConnection

from pocket3d.api.keys import STATE_KEY
from pocket3d.errors import HIDDEN_PATH as HIDDEN
from pocket3d.errors import hide_server_paths as text
from pocket3d.jobs.records import JobRecord, StageRecord, StageWarning

T = TypeVar("T")
__all__ = ["HIDDEN", "deep", "dump", "job", "sees_everything", "text"]


def sees_everything(request: HTTPConnection) -> bool:
    """An admin key, or no auth at all (on loopback, the one local owner is the admin)."""
    if not request.app.state.node.settings.auth.enabled:
        return True
    principal = request.scope.get("state", {}).get(STATE_KEY)
    return principal is not None and principal.is_admin


def deep(value: T) -> T:
    """Every string in a JSON-like value, redacted."""
    if isinstance(value, str):
        return text(value)  # type: ignore[return-value]
    if isinstance(value, dict):
        return {k: deep(v) for k, v in value.items()}  # type: ignore[return-value]
    if isinstance(value, list):
        return [deep(v) for v in value]  # type: ignore[return-value]
    return value


def job(record: JobRecord) -> JobRecord:
    """The job with its messages redacted: its error, and each stage's error, progress message and warnings (the
    same record when they hold no path)."""
    stages = [_stage(s) for s in record.stages]
    error = text(record.error_message) if record.error_message else None
    if error == record.error_message and all(new is old for new, old in zip(stages, record.stages, strict=True)):
        return record
    return dataclasses.replace(record, stages=stages, error_message=error)


def _stage(stage: StageRecord) -> StageRecord:
    error = text(stage.error_message) if stage.error_message else None
    message = text(stage.message) if stage.message else None
    warnings = [StageWarning(w.code, text(w.message)) for w in stage.warnings]
    if error == stage.error_message and message == stage.message and warnings == stage.warnings:
        return stage
    return dataclasses.replace(stage, error_message=error, message=message, warnings=warnings)


def dump(model: Any) -> Any:
    """A response model's fields, redacted (for models that answer with reasons and problems)."""
    return type(model).model_validate(deep(model.model_dump(mode="json")))
