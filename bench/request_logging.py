"""What the request id, the HTTP metrics and the access line cost per request, in-process (no network, no
server): the same trivial ASGI app bare, behind asgi-correlation-id and the access middleware with the access
line off, and with it on, for text and JSON logs written to a real file (the log's stream goes to /dev/null).

    .venv/bin/python bench/request_logging.py [--requests 20000]

"on the loop" is the time the event loop spent a request; "in all" adds what the log's writer thread still had
to do when the run ended (both are CPU time on this machine; only the first delays answers).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import tempfile
import time
from pathlib import Path

from asgi_correlation_id import CorrelationIdMiddleware
from prometheus_client import CollectorRegistry, Histogram

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
from pocket3d import logs  # noqa: E402
from pocket3d.api.middleware import AccessLogMiddleware, valid_request_id  # noqa: E402
from pocket3d.config import load_settings  # noqa: E402

SCOPE = {"type": "http", "method": "GET", "path": "/api/v1/jobs/job_x", "query_string": b""}


async def bare(scope, receive, send) -> None:  # noqa: ANN001
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": b"{}"})


def stack(log_access: bool):  # noqa: ANN201
    seconds = Histogram("bench_seconds", "x", ["method", "route", "status"], registry=CollectorRegistry())
    return CorrelationIdMiddleware(
        AccessLogMiddleware(bare, observe=lambda m, r, s, t: seconds.labels(m, r, str(s)).observe(t),
                            log_access=log_access),
        validator=valid_request_id, generator=lambda: f"{random.getrandbits(128):032x}")


async def _receive() -> dict:
    return {"type": "http.request", "body": b""}


async def _send(message: dict) -> None:
    pass


async def _run(app, n: int) -> None:  # noqa: ANN001
    for _ in range(n):
        await app({**SCOPE, "headers": []}, _receive, _send)


def measure(app, n: int) -> tuple[float, float]:  # noqa: ANN001
    """(us on the event loop, us in all) per request, the best of three runs."""
    best = (float("inf"), float("inf"))
    for _ in range(3):
        started = time.perf_counter()
        asyncio.run(_run(app, n))
        loop = time.perf_counter() - started
        logs._listener.stop()  # drains the queue: the writing is part of the cost
        total = time.perf_counter() - started
        logs._listener.start()
        best = min(best, (loop / n * 1e6, total / n * 1e6))
    return best


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=20000)
    args = ap.parse_args(argv)
    data_dir = Path(tempfile.mkdtemp(prefix="p3d-bench-logs-"))
    print(f"{'log':5} {'layers':36} {'on the loop':>12} {'in all':>9}   (us per request)")
    for fmt in ("text", "json"):
        logs.configure(load_settings(ROOT / "config" / "system.yaml", data_dir=data_dir), fmt)
        logs._listener.handlers[0].stream = open(os.devnull, "w")  # the terminal; the file stays real
        for name, app in (("bare app", bare), ("+ request id, HTTP metrics", stack(False)),
                          ("+ access line (logging.access)", stack(True))):
            loop, total = measure(app, args.requests)
            print(f"{fmt:5} {name:36} {loop:12.1f} {total:9.1f}")


if __name__ == "__main__":
    main()
