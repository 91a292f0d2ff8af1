"""The baseline for bench/api_overhead.py: a bare FastAPI endpoint answering a fixed JSON body."""

from __future__ import annotations

import json
import sys

import uvicorn
from fastapi import FastAPI


def main() -> None:
    port, payload_file = int(sys.argv[1]), sys.argv[2]
    with open(payload_file) as f:
        payloads: dict[str, dict] = json.load(f)
    app = FastAPI()

    @app.get("/api/v1/jobs/{job_id}")
    async def get_job(job_id: str) -> dict:
        return payloads[job_id]

    @app.get("/sync/api/v1/jobs/{job_id}")
    def get_job_sync(job_id: str) -> dict:  # a plain def endpoint: FastAPI runs it in its threadpool
        return payloads[job_id]

    # The same settings `pocket3d serve` gives uvicorn.
    uvicorn.run(app, host="127.0.0.1", port=port, log_config=None, timeout_graceful_shutdown=10, access_log=False)


if __name__ == "__main__":
    main()
