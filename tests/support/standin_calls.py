"""Where the test stand-ins (tests/support/standins) note how the adapters called them, so a test can check the
arguments an adapter passed to a library's entry point. Each call is one JSON line in the file named by
``POCKET3D_STANDIN_CALLS`` (set by the test for its server); values JSON cannot hold are written as their repr."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

ENV = "POCKET3D_STANDIN_CALLS"


def _plain(value: Any) -> Any:
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, Path):
        return str(value)
    return repr(value)


def record(entry: str, **arguments: Any) -> None:
    path = os.environ.get(ENV)
    if not path:
        return
    line = json.dumps({"entry": entry, "pid": os.getpid(), "arguments": _plain(arguments)})
    with open(path, "a") as f:
        f.write(line + "\n")


def read(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def calls(path: Path, entry: str) -> list[dict]:
    return [c["arguments"] for c in read(path) if c["entry"] == entry]
