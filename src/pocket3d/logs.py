"""Logging for the server and its device workers: text for people (the default), or one JSON object a line.

Everything logs through the standard ``logging`` module (pocket3d, uvicorn, libraries); structlog's
ProcessorFormatter renders the records. A JSON line holds ``time``, ``level``, ``logger``, ``message`` and
``request_id`` (asgi-correlation-id's, None outside a request), then what is bound where it applies: ``job_id``,
``stage``, ``model``, ``device`` (the scheduler and the workers bind them with structlog's contextvars), and the
fields a line passes as ``extra`` (the access line's method, route, status, seconds, key_id).
"""

from __future__ import annotations

import io
import logging
import logging.handlers
import sys
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # device workers import this module: they start faster without the config (and, logging
    from pocket3d.config import Settings  # text, without structlog and asgi-correlation-id)

_active_format = "text"
_FIRST = ("time", "level", "logger", "message", "request_id")


def active_format() -> str:
    """The format this process logs in; device workers are started with the same."""
    return _active_format


def _request_id() -> str | None:
    from asgi_correlation_id import correlation_id

    return correlation_id.get()


class RequestIdFilter(logging.Filter):
    """Gives text lines their ``%(request_id)s`` ("-" outside a request)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = _request_id() or "-"
        return True


def _add_request_id(_: Any, __: str, event: dict[str, Any]) -> dict[str, Any]:
    event.setdefault("request_id", _request_id())
    return event


def _static(fields: Mapping[str, Any]) -> Callable[[Any, str, dict[str, Any]], dict[str, Any]]:
    def add(_: Any, __: str, event: dict[str, Any]) -> dict[str, Any]:
        for k, v in fields.items():
            event.setdefault(k, v)
        return event

    return add


def _in_order(_: Any, __: str, event: dict[str, Any]) -> dict[str, Any]:
    event["message"] = event.pop("event", "")
    event.pop("color_message", None)  # uvicorn's message again, with terminal colours
    return {**{k: event.pop(k, None) for k in _FIRST}, **event}


def json_formatter(static: Mapping[str, Any] | None = None) -> logging.Formatter:
    import structlog

    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[structlog.contextvars.merge_contextvars, _add_request_id, _static(static or {}),
                           structlog.stdlib.add_log_level, structlog.stdlib.add_logger_name,
                           structlog.stdlib.ExtraAdder(),
                           structlog.processors.TimeStamper(fmt="iso", utc=True, key="time")],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    structlog.processors.format_exc_info, _in_order,
                    structlog.processors.JSONRenderer(default=str, ensure_ascii=False)])


def _install(handlers: list[logging.Handler], formatter: logging.Formatter, level: int | str) -> None:
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    for h in handlers:
        h.setFormatter(formatter)
        if type(formatter) is logging.Formatter:  # the JSON formatter adds request_id itself (None outside one)
            h.addFilter(RequestIdFilter())
        root.addHandler(h)
    root.setLevel(level)
    # Python's warnings become log lines too, so a JSON log holds nothing but JSON.
    logging.captureWarnings(True)


def configure(settings: Settings, log_format: str | None = None) -> None:
    """The server's logging from the ``logging`` section; ``log_format`` (--log-format) overrides its format."""
    global _active_format
    cfg = settings.logging
    _active_format = log_format or cfg.format
    handlers: list[logging.Handler] = [logging.StreamHandler()]
    if cfg.file is not None:
        path = cfg.file if cfg.file.is_absolute() else settings.data_dir / cfg.file
        path.parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.handlers.RotatingFileHandler(path, maxBytes=int(cfg.max_size),
                                                             backupCount=cfg.backup_count))
    formatter = json_formatter() if _active_format == "json" else logging.Formatter(cfg.text_pattern)
    _install(handlers, formatter, cfg.level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
    # httpx logs every request's full URL at INFO; a webhook URL's query may hold the receiver's token.
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.WARNING)


def configure_worker(log_format: str, level: int, device_id: str) -> None:
    """A device worker's logging: to stderr, in the server's format, every line naming the device. In JSON, what
    a model prints is turned into log lines as well (what C code writes to the file descriptors is not)."""
    global _active_format
    _active_format = log_format
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        _install([handler], json_formatter({"device": device_id, "process": "worker"}), level)
        sys.stdout = _LineLogger(logging.getLogger("worker.stdout"), logging.INFO)
        sys.stderr = _LineLogger(logging.getLogger("worker.stderr"), logging.WARNING)
    else:
        pattern = f"%(asctime)s %(levelname)s worker[{device_id}] %(name)s: %(message)s"
        _install([handler], logging.Formatter(pattern), level)


class _LineLogger(io.TextIOBase):
    """A text stream whose lines become log records (progress bars' carriage returns end a line too)."""

    def __init__(self, logger: logging.Logger, level: int):
        self.logger, self.level, self._buffer = logger, level, ""
        self._busy = False  # logging's own error report goes to sys.stderr: no loop through here

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        if self._busy:
            return len(text)
        self._buffer += text
        *lines, self._buffer = self._buffer.replace("\r", "\n").split("\n")
        self._busy = True
        try:
            for line in lines:
                if line.strip():
                    self.logger.log(self.level, line.rstrip())
        finally:
            self._busy = False
        return len(text)

    def flush(self) -> None:
        if self._buffer.strip():
            self.logger.log(self.level, self._buffer.rstrip())
        self._buffer = ""
