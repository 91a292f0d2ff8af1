"""Logging for the server and its device workers: text for people (the default), or one JSON object a line.

Everything logs through the standard ``logging`` module (pocket3d, uvicorn, libraries); structlog's
ProcessorFormatter renders the records. A JSON line holds ``time``, ``level``, ``logger``, ``message`` and
``request_id`` (asgi-correlation-id's, None outside a request), then what is bound where it applies: ``job_id``,
``stage``, ``model``, ``device`` (the scheduler and the workers bind them with structlog's contextvars), and the
fields a line passes as ``extra`` (the access line's method, route, status, seconds, key_id).

In the server, a record only captures its context and goes onto a queue where it is made; a listener thread
formats it (once for every handler) and writes it, so no request waits for a disk write (logging.handlers'
QueueHandler and QueueListener). The listener writes in batches: what comes within LOG_BATCH_SECONDS of a record
goes with it, one write and one flush per handler. Woken and flushing twice for every line, it cost the API process
a fifth of the submits it could take in a burst (two lines each).
"""

from __future__ import annotations

import atexit
import contextlib
import copy
import io
import logging
import logging.handlers
import os
import queue
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # device workers import this module: they start faster without the config (and, logging
    from pocket3d.config import Settings  # text, without structlog and asgi-correlation-id)

_active_format = "text"
_listener: logging.handlers.QueueListener | None = None
_FIRST = ("time", "level", "logger", "message", "request_id")
LOG_BATCH_SECONDS = 0.05
_SRCFILE = logging._srcfile  # type: ignore[attr-defined]  # the logging module's own, put back when a pattern needs it


def active_format() -> str:
    """The format this process logs in; device workers are started with the same."""
    return _active_format


class _CaptureBound(logging.Filter):
    """Puts the bound context (job_id, stage, model, device) on the record where it is made: the thread that
    formats it may have a context of its own."""

    def filter(self, record: logging.LogRecord) -> bool:
        from structlog.contextvars import get_contextvars

        for key, value in get_contextvars().items():
            record.__dict__.setdefault(key, value)
        return True


class _CaptureContext(_CaptureBound):
    """The bound context and the request id."""

    def filter(self, record: logging.LogRecord) -> bool:
        from asgi_correlation_id import correlation_id

        record.request_id = correlation_id.get()
        return super().filter(record)


@contextlib.contextmanager
def bound(fields: Mapping[str, str]) -> Iterator[None]:
    """``fields`` on every JSON line this thread writes meanwhile (a device worker's lines about a stage: its
    job_id, stage and model). Text lines do not show them, so structlog is not loaded for text."""
    if not fields or _active_format != "json":
        yield
        return
    from structlog.contextvars import bound_contextvars

    with bound_contextvars(**fields):
        yield


class _TextRequestId(logging.Filter):
    """``%(request_id)s`` of a text line: "-" outside a request."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = getattr(record, "request_id", None) or "-"
        return True


class _Enqueue(logging.handlers.QueueHandler):
    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        # The message is made now (its arguments may change later); the record stays in this process, so its
        # traceback is kept for the formatter rather than flattened into the message.
        record = copy.copy(record)
        record.msg, record.args = record.getMessage(), None
        return record


class _BatchListener(logging.handlers.QueueListener):
    """A QueueListener that writes what is queued in batches (see the module docstring)."""

    def _monitor(self) -> None:
        while True:
            batch = [self.queue.get()]
            if batch[0] is not self._sentinel:
                time.sleep(LOG_BATCH_SECONDS)
            while True:
                try:
                    batch.append(self.queue.get_nowait())
                except queue.Empty:
                    break
            records = [r for r in batch if r is not self._sentinel]
            if records:
                for handler in self.handlers:
                    _write_batch(handler, records)
            if len(records) < len(batch):
                return


def _write_batch(handler: logging.Handler, records: list[logging.LogRecord]) -> None:
    """What ``handler.emit`` would write for each record, in one write and one flush (a stream or a rotating file;
    a batch can take a file past max_size by its own length before it rolls over). A batch that cannot be written
    whole (a line the file's encoding cannot hold) is written line by line, so only that line is lost."""
    if not isinstance(handler, logging.StreamHandler):
        for record in records:
            handler.handle(record)
        return
    lines: list[tuple[logging.LogRecord, str]] = []
    for record in records:
        if record.levelno >= handler.level and handler.filter(record):
            try:
                lines.append((record, handler.format(record) + "\n"))
            except Exception:
                handler.handleError(record)
    if not lines:
        return
    text = "".join(line for _, line in lines)
    with handler.lock or contextlib.nullcontext():
        try:
            if (isinstance(handler, logging.handlers.RotatingFileHandler) and handler.maxBytes > 0
                    and handler.stream is not None and handler.stream.tell() + len(text) >= handler.maxBytes
                    and os.path.isfile(handler.baseFilename)):  # never roll over a device or a pipe
                handler.doRollover()
            handler.stream.write(text)
            handler.flush()
            return
        except Exception:
            pass
        for record, line in lines:
            try:
                handler.stream.write(line)
                handler.flush()
            except Exception:
                handler.handleError(record)


def _static(fields: Mapping[str, Any]) -> Callable[[Any, str, dict[str, Any]], dict[str, Any]]:
    def add(_: Any, __: str, event: dict[str, Any]) -> dict[str, Any]:
        for k, v in fields.items():
            event.setdefault(k, v)
        return event

    return add


def _time_of_record(_: Any, __: str, event: dict[str, Any]) -> dict[str, Any]:
    record = event.get("_record")
    created = record.created if record is not None else datetime.now(UTC).timestamp()
    event["time"] = datetime.fromtimestamp(created, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return event


def _in_order(_: Any, __: str, event: dict[str, Any]) -> dict[str, Any]:
    event["message"] = event.pop("event", "")
    event.pop("color_message", None)  # uvicorn's message again, with terminal colours
    return {**{k: event.pop(k, None) for k in _FIRST}, **event}


def json_formatter(static: Mapping[str, Any] | None = None) -> logging.Formatter:
    import structlog

    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[_static(static or {}), structlog.stdlib.add_log_level, structlog.stdlib.add_logger_name,
                           structlog.stdlib.ExtraAdder(), _time_of_record],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    structlog.processors.format_exc_info, _in_order,
                    structlog.processors.JSONRenderer(default=str, ensure_ascii=False)])


class _OncePerRecord(logging.Formatter):
    """Formats a record once for every handler: the stream and the file would each format it, and the rotating
    file handler twice (its size check formats too); a JSON line costs about 50 us."""

    def __init__(self, inner: logging.Formatter):
        super().__init__()
        self.inner = inner

    def format(self, record: logging.LogRecord) -> str:
        line = record.__dict__.get("_pocket3d_line")
        if line is None:
            line = record._pocket3d_line = self.inner.format(record)
        return line


def _formatted(handlers: list[logging.Handler], formatter: logging.Formatter) -> list[logging.Handler]:
    once = _OncePerRecord(formatter)
    for h in handlers:
        h.setFormatter(once)
        if type(formatter) is logging.Formatter:
            h.addFilter(_TextRequestId())
    return handlers


def _set_root(handler: logging.Handler, level: int | str) -> None:
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(level)
    # Python's warnings become log lines too, so a JSON log holds nothing but JSON.
    logging.captureWarnings(True)


def _record_only_what_is_shown(pattern: str) -> None:
    """A record finds its caller (file, line: a walk up the stack), thread and process only when the text pattern
    shows them (JSON lines do not): a third of what a log call costs, twice per submit. ``logging._srcfile = None``
    is the logging module's own switch for the caller lookup."""
    def shows(*fields: str) -> bool:
        return any(f"%({field})" in pattern for field in fields)

    logging.logThreads = shows("thread", "threadName")
    logging.logProcesses = shows("process")
    logging.logMultiprocessing = shows("processName")
    caller = shows("pathname", "filename", "module", "lineno", "funcName")
    logging._srcfile = _SRCFILE if caller else None  # type: ignore[attr-defined]


def configure(settings: Settings, log_format: str | None = None) -> None:
    """The server's logging from the ``logging`` section; ``log_format`` (--log-format) overrides its format."""
    global _active_format, _listener
    cfg = settings.logging
    _active_format = log_format or cfg.format
    handlers: list[logging.Handler] = [logging.StreamHandler()]
    if cfg.file is not None:
        path = cfg.file if cfg.file.is_absolute() else settings.data_dir / cfg.file
        path.parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.handlers.RotatingFileHandler(path, maxBytes=int(cfg.max_size),
                                                             backupCount=cfg.backup_count))
    formatter = json_formatter() if _active_format == "json" else logging.Formatter(cfg.text_pattern)
    _record_only_what_is_shown("" if _active_format == "json" else cfg.text_pattern)
    if _listener is not None:
        _listener.stop()
    records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    _listener = _BatchListener(records, *_formatted(handlers, formatter))
    _listener.start()
    enqueue = _Enqueue(records)
    enqueue.addFilter(_CaptureContext())
    _set_root(enqueue, cfg.level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
    # httpx logs every request's full URL at INFO; a webhook URL's query may hold the receiver's token.
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.WARNING)


@atexit.register
def _flush() -> None:
    """What is still queued is written before the process exits."""
    if _listener is not None:
        _listener.stop()


def configure_worker(log_format: str, level: int, device_id: str) -> None:
    """A device worker's logging: to stderr, in the server's format, every line naming the device. In JSON, what
    a model prints is turned into log lines as well (what C code writes to the file descriptors is not)."""
    global _active_format
    _active_format = log_format
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.addFilter(_CaptureBound())
        _set_root(_formatted([handler], json_formatter({"device": device_id, "process": "worker"}))[0], level)
        sys.stdout = _LineLogger(logging.getLogger("worker.stdout"), logging.INFO)
        sys.stderr = _LineLogger(logging.getLogger("worker.stderr"), logging.WARNING)
    else:
        pattern = f"%(asctime)s %(levelname)s worker[{device_id}] %(name)s: %(message)s"
        _set_root(_formatted([handler], logging.Formatter(pattern))[0], level)


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
