"""Requests per second of GET /api/v1/jobs/{id} on pocket3d against a bare FastAPI endpoint returning the same
JSON, under the same uvicorn settings, in one run. Goal: pocket3d at least 0.5 of the bare figure.

    .venv/bin/python bench/api_overhead.py [--seconds 10] [--connections 16]

Uses wrk when installed (apt-get install wrk), else a small asyncio load generator (which then costs the
servers CPU on a 2-core machine: compare the ratio, not the absolute figures).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "support"))
from server import ServerProcess, free_port  # noqa: E402

IMAGE = ROOT.parent / "shared" / "testdata" / "images" / "T.png"


def wrk(url: str, seconds: int, connections: int) -> tuple[float, str, str]:
    out = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", url],
                         capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p50 = re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1)
    p99 = re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1)
    if re.search(r"Non-2xx or 3xx responses", out):
        raise RuntimeError(f"errors during the run against {url}:\n{out}")
    return rps, p50, p99


def python_load(url: str, seconds: int, connections: int) -> tuple[float, str, str]:
    latencies: list[float] = []

    async def worker(client: httpx.AsyncClient, deadline: float) -> None:
        while time.monotonic() < deadline:
            t0 = time.perf_counter()
            r = await client.get(url)
            r.raise_for_status()
            latencies.append(time.perf_counter() - t0)

    async def run() -> None:
        limits = httpx.Limits(max_connections=connections)
        async with httpx.AsyncClient(limits=limits) as client:
            deadline = time.monotonic() + seconds
            await asyncio.gather(*(worker(client, deadline) for _ in range(connections)))

    asyncio.run(run())
    latencies.sort()
    fmt = lambda q: f"{latencies[int(q * (len(latencies) - 1))] * 1000:.2f}ms"  # noqa: E731
    return len(latencies) / seconds, fmt(0.5), fmt(0.99)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    load = wrk if shutil.which("wrk") else python_load
    tmp = Path(tempfile.mkdtemp(prefix="p3d-bench-"))
    srv = ServerProcess(tmp / "data").start()
    bare = None
    try:
        with srv.client() as c:
            def submit(params: dict, wait: int) -> str:
                with open(IMAGE, "rb") as f:
                    file_id = c.post("/files", files={"file": ("T.png", f)}).json()["file_id"]
                return c.post(f"/mesh/generate?wait={wait}", json={"images": [file_id], "parameters": params}
                              ).json()["job_id"]

            done = submit({}, 20)
            running = [submit({"delay": 600}, 0) for _ in range(4)]  # fill the model's 4 slots
            queued = submit({"delay": 600}, 0)
            time.sleep(1.0)
            cases = {"succeeded": done, "running": running[0], "queued": queued}
            payloads = {job_id: c.get(f"/jobs/{job_id}").json() for job_id in cases.values()}
            assert payloads[queued]["queue_position"] == 1, payloads[queued]
        payload_file = tmp / "payloads.json"
        payload_file.write_text(json.dumps(payloads))
        bare_port = free_port()
        bare = subprocess.Popen([sys.executable, str(ROOT / "bench" / "bare_app.py"), str(bare_port), str(payload_file)])
        base = f"http://127.0.0.1:{bare_port}"
        for _ in range(100):
            try:
                httpx.get(f"{base}/api/v1/jobs/{done}", timeout=1).raise_for_status()
                break
            except httpx.HTTPError:
                time.sleep(0.1)

        targets = {"pocket3d": srv.url + "/api/v1/jobs/{}", "bare async def": base + "/api/v1/jobs/{}",
                   "bare def": base + "/sync/api/v1/jobs/{}"}
        print(f"GET /api/v1/jobs/{{id}}: {args.connections} connections, {args.rounds} interleaved rounds of "
              f"{args.seconds} s per server and job state, load by {'wrk' if load is wrk else 'python asyncio'}; "
              "medians")
        print(f"{'job state':<10} {'server':<16} {'req/s':>7} {'p50':>9} {'p99':>9} {'pocket3d/this':>13}")
        for state, job_id in cases.items():
            runs: dict[str, list[tuple[float, str, str]]] = {k: [] for k in targets}
            for _ in range(args.rounds):  # interleaved, so drift in the machine's speed hits all alike
                for label, url in targets.items():
                    runs[label].append(load(url.format(job_id), args.seconds, args.connections))
            ours = statistics.median(r[0] for r in runs["pocket3d"])
            for label, results in runs.items():
                rps = statistics.median(r[0] for r in results)
                mid = sorted(results)[len(results) // 2]
                ratio = "" if label == "pocket3d" else f"{ours / rps:.2f}"
                print(f"{state if label == 'pocket3d' else '':<10} {label:<16} {rps:>7.0f} {mid[1]:>9} {mid[2]:>9} "
                      f"{ratio:>13}")
    finally:
        if bare is not None:
            bare.terminate()
            bare.wait()
        srv.kill()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
