"""What only an admin sees: server paths in messages (a checkout at /opt/TRELLIS.2, a data directory), and the
processes behind the devices. Every other caller gets the same answer with ``<server path>`` in their place."""

from __future__ import annotations

import dataclasses
import re
from typing import Any, TypeVar

from starlette.requests import HTTPConnection

from pocket3d.api.keys import STATE_KEY
from pocket3d.jobs.records import JobRecord

T = TypeVar("T")
# An absolute path of two or more parts, not inside a word or a URL ("http://host/a/b" keeps its path).
_PATH = re.compile(r"(?<![\w.:/~-])/(?:[\w.+~@-]+/)+[\w.+~@-]*")
_ROUTES = ("/api/", "/docs", "/redoc")  # the API's own routes are not server paths
HIDDEN = "<server path>"


def sees_everything(request: HTTPConnection) -> bool:
    """An admin key, or no auth at all (on loopback, the one local owner is the admin)."""
    if not request.app.state.node.settings.auth.enabled:
        return True
    principal = request.scope.get("state", {}).get(STATE_KEY)
    return principal is not None and principal.is_admin


def text(value: str) -> str:
    return _PATH.sub(lambda m: m.group(0) if m.group(0).startswith(_ROUTES) else HIDDEN, value)


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
    """The job with its error messages redacted (the same record when they hold no path)."""
    messages = [record.error_message] + [s.error_message for s in record.stages]
    if not any(m and _PATH.search(m) for m in messages):
        return record
    stages = [dataclasses.replace(s, error_message=text(s.error_message)) if s.error_message else s
              for s in record.stages]
    return dataclasses.replace(record, stages=stages,
                               error_message=text(record.error_message) if record.error_message else None)


def dump(model: Any) -> Any:
    """A response model's fields, redacted (for models that answer with reasons and problems)."""
    return type(model).model_validate(deep(model.model_dump(mode="json")))
