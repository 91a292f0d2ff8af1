"""The baselines for bench/api_overhead.py: bare FastAPI endpoints, one answering a fixed JSON body, one accepting a
job with one SQLite insert (WAL, synchronous=FULL, as pocket3d's store) and answering 202."""

from __future__ import annotations

import json
import sqlite3
import sys
import threading
import time
import uuid

import uvicorn
from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel


class Submit(BaseModel):
    text_prompt: str
    output_format: str = "glb"


def main() -> None:
    port, payload_file, database = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    with open(payload_file) as f:
        payloads: dict[str, dict] = json.load(f)
    app = FastAPI()
    local = threading.local()

    def connection() -> sqlite3.Connection:
        conn = getattr(local, "conn", None)
        if conn is None:
            conn = local.conn = sqlite3.connect(database, timeout=30)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("CREATE TABLE IF NOT EXISTS jobs (id TEXT PRIMARY KEY, request TEXT, created_at REAL)")
        return conn

    def insert(req: Submit) -> str:
        job_id = f"job_{uuid.uuid4().hex}"
        conn = connection()
        with conn:
            conn.execute("INSERT INTO jobs VALUES (?, ?, ?)", (job_id, req.model_dump_json(), time.time()))
        return job_id

    @app.get("/api/v1/jobs/{job_id}")
    async def get_job(job_id: str) -> dict:
        return payloads[job_id]

    @app.get("/sync/api/v1/jobs/{job_id}")
    def get_job_sync(job_id: str) -> dict:  # a plain def endpoint: FastAPI runs it in its threadpool
        return payloads[job_id]

    @app.post("/api/v1/mesh/generate", status_code=202)
    async def submit(req: Submit) -> JSONResponse:  # as pocket3d's: the write in the threadpool
        job_id = await run_in_threadpool(insert, req)
        return JSONResponse({"job_id": job_id, "status": "queued"}, status_code=202)

    # The same settings `pocket3d serve` gives uvicorn.
    uvicorn.run(app, host="127.0.0.1", port=port, log_config=None, timeout_graceful_shutdown=10, access_log=False)


if __name__ == "__main__":
    main()
