"""Logging from the ``logging`` section of system.yaml; every record carries the request id."""

from __future__ import annotations

import logging
import logging.handlers

from pocket3d.api.middleware import RequestIdLogFilter
from pocket3d.config import Settings


def configure(settings: Settings) -> None:
    cfg = settings.logging
    handlers: list[logging.Handler] = [logging.StreamHandler()]
    if cfg.file is not None:
        path = cfg.file if cfg.file.is_absolute() else settings.data_dir / cfg.file
        path.parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.handlers.RotatingFileHandler(path, maxBytes=int(cfg.max_size),
                                                             backupCount=cfg.backup_count))
    formatter = logging.Formatter(cfg.format)
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    for h in handlers:
        h.setFormatter(formatter)
        h.addFilter(RequestIdLogFilter())
        root.addHandler(h)
    root.setLevel(cfg.level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
