"""The API's own overhead against bare FastAPI apps under the same uvicorn settings, in one run.

1. Reading a job: requests per second of GET /api/v1/jobs/{id} (succeeded, running, queued) against a bare endpoint
   returning the same JSON. Goal: at least 0.5 of the bare figure.
2. Submitting: a burst of POST /api/v1/mesh/generate (a text prompt; the built-in procedural model makes each
   job's mesh and the export stage its GLB and preview while the burst goes on) against a bare endpoint that
   validates the same body and does one SQLite insert (WAL, synchronous=FULL, as pocket3d's store). Goals: accepted
   jobs per second at least 0.5 of the bare figure, p99 under 150 ms at 16 connections, and the API process
   growing by no more than 64 MB during the burst. ``--profile DIR`` samples the API process with py-spy during
   the burst and prints where its time went.

    .venv/bin/python bench/api_overhead.py [--seconds 5] [--connections 16] [--submit-seconds 15] [--profile DIR]

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
import threading
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


WRK_POST = """wrk.method = "POST"
wrk.body = '{"text_prompt": "a red wooden chair", "output_format": "glb"}'
wrk.headers["Content-Type"] = "application/json"
"""
SUBMIT_GOALS = {"ratio": 0.5, "p99_ms": 150.0, "rss_mb": 64.0}
# Where the API process's time goes during a burst (py-spy --gil: the samples where a thread held the GIL, which
# is what bounds the process): the first category whose needle appears in a sample's stack.
PROFILE_CATEGORIES = [
    ("drawing previews", ("render_preview",)),
    ("export (formats)", ("export_scene", "convert_glb", "stage_io.py:export", "load_scene")),
    ("submit: the transaction", ("GroupCommit", "_persist_job", "write_grouped")),
    ("submit: plan and validate", ("submit_request", "submit_inline", "_plan_job")),
    ("log lines", ("logging/__init__.py", "logging/handlers.py", "pocket3d/logs.py")),
    ("scheduler rounds", ("_dispatch_once", "queued_stages", "scheduler/node.py", "policy.py")),
    ("status and events", ("snapshots.py", "events.py")),
    ("HTTP (uvicorn, starlette, FastAPI)", ("uvicorn", "h11", "httptools", "starlette", "fastapi", "asyncio")),
]


def wrk_post(url: str, seconds: int, connections: int, script: Path) -> dict:
    out = subprocess.run(["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script), url],
                         capture_output=True, text=True, check=True).stdout
    total = int(re.search(r"(\d+) requests in", out).group(1))
    failed = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return {"accepted": (total - (int(failed.group(1)) if failed else 0)) / seconds, "total": total,
            "failed": int(failed.group(1)) if failed else 0,
            "errors": sum(int(x) for x in errors.groups()) if errors else 0,
            "p50_ms": _ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1)),
            "p99_ms": _ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))}


def python_post(url: str, seconds: int, connections: int, script: Path) -> dict:
    latencies: list[float] = []
    failed = 0
    body = {"text_prompt": "a red wooden chair", "output_format": "glb"}

    async def worker(client: httpx.AsyncClient, deadline: float) -> None:
        nonlocal failed
        while time.monotonic() < deadline:
            t0 = time.perf_counter()
            r = await client.post(url, json=body)
            latencies.append(time.perf_counter() - t0)
            failed += r.status_code != 202

    async def run() -> None:
        async with httpx.AsyncClient(limits=httpx.Limits(max_connections=connections), timeout=60) as client:
            deadline = time.monotonic() + seconds
            await asyncio.gather(*(worker(client, deadline) for _ in range(connections)))

    asyncio.run(run())
    latencies.sort()
    return {"accepted": (len(latencies) - failed) / seconds, "total": len(latencies), "failed": failed, "errors": 0,
            "p50_ms": latencies[len(latencies) // 2] * 1000, "p99_ms": latencies[int(0.99 * (len(latencies) - 1))] * 1000}


def _ms(text: str) -> float:
    value, unit = float(re.match(r"[\d.]+", text).group(0)), re.search(r"[a-z]+$", text).group(0)
    return value * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


class RssSampler:
    """The peak resident memory of a process while a block runs, sampled every 0.1 s."""

    def __init__(self, pid: int):
        import psutil

        self.process = psutil.Process(pid)
        self.before = self.peak = self.process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            self.peak = max(self.peak, self.process.memory_info().rss)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def growth_mb(self) -> float:
        return (self.peak - self.before) / (1024 * 1024)


def profile_summary(raw: Path) -> list[tuple[str, float]]:
    """Shares of py-spy's samples (``--format raw``: one folded stack and a count per line) by category."""
    counts: dict[str, int] = {}
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not n.isdigit():
            continue
        total += int(n)
        label = next((name for name, needles in PROFILE_CATEGORIES if any(x in stack for x in needles)), "other")
        counts[label] = counts.get(label, 0) + int(n)
    order = [name for name, _ in PROFILE_CATEGORIES] + ["other"]
    return [(name, counts.get(name, 0) / max(total, 1)) for name in order]


def submit_burst(args: argparse.Namespace, tmp: Path) -> None:
    """Part 2: the submit path (see the module docstring)."""
    post = wrk_post if shutil.which("wrk") else python_post
    script = tmp / "post.lua"
    script.write_text(WRK_POST)
    bare_port = free_port()
    bare = subprocess.Popen([sys.executable, str(ROOT / "bench" / "bare_app.py"), str(bare_port),
                             str(tmp / "payloads.json"), str(tmp / "bare.db")])
    env = {"POCKET3D_SCHEDULER__QUEUE_SIZE": "1000000", "POCKET3D_SCHEDULER__MAX_JOBS_PER_OWNER": "1000000"}
    # The shipped settings (config/system.yaml: model workers at nice 10, two stages at once on a CPU device), not
    # the test suite's.
    srv = ServerProcess(tmp / "submit-data", env=env, config=ROOT / "config" / "system.yaml",
                        models=ROOT / "bench" / "models-submit.yaml")
    results: dict[str, dict] = {}
    try:
        base = f"http://127.0.0.1:{bare_port}"
        for _ in range(100):
            try:
                httpx.get(f"{base}/docs", timeout=1).raise_for_status()
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        with RssSampler(bare.pid) as rss:
            results["bare FastAPI + 1 insert"] = post(f"{base}/api/v1/mesh/generate", args.submit_seconds,
                                                      args.connections, script)
        results["bare FastAPI + 1 insert"]["rss_mb"] = rss.growth_mb
        bare.terminate()
        bare.wait()
        srv.start()
        with srv.client() as c:  # warm: the first job loads the model and starts the export path
            while c.get("/system/ready").status_code != 200:
                time.sleep(0.2)
            job = c.post("/mesh/generate?wait=30", json={"text_prompt": "a red wooden chair"}).json()
            assert job.get("status") == "succeeded", job
        profiler = None
        if args.profile:
            args.profile.mkdir(parents=True, exist_ok=True)
            raw = args.profile / "submit-burst.txt"
            profiler = subprocess.Popen([str(Path(sys.executable).parent / "py-spy"), "record", "--pid", str(srv.proc.pid), "--duration",
                                         str(args.submit_seconds), "--rate", "100", "--nonblocking", "--gil", "--format", "raw",
                                         "--output", str(raw)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        with RssSampler(srv.proc.pid) as rss:
            results["pocket3d"] = post(f"{srv.url}/api/v1/mesh/generate", args.submit_seconds, args.connections,
                                       script)
        results["pocket3d"]["rss_mb"] = rss.growth_mb
        if profiler is not None:
            profiler.wait(60)
    finally:
        if bare.poll() is None:
            bare.terminate()
            bare.wait()
        srv.kill()
    ours, theirs = results["pocket3d"], results["bare FastAPI + 1 insert"]
    ratio = ours["accepted"] / theirs["accepted"]
    print(f"\nPOST /api/v1/mesh/generate (a text prompt): {args.connections} connections for {args.submit_seconds} s "
          f"each, load by {'wrk' if post is wrk_post else 'python asyncio'}; the jobs run meanwhile")
    print(f"{'server':<26} {'accepted/s':>10} {'refused':>8} {'p50 ms':>8} {'p99 ms':>8} {'RSS growth MB':>14}")
    for label, r in results.items():
        print(f"{label:<26} {r['accepted']:>10.0f} {r['failed'] + r['errors']:>8} {r['p50_ms']:>8.1f} "
              f"{r['p99_ms']:>8.1f} {r['rss_mb']:>14.0f}")
    verdict = lambda ok: "met" if ok else "MISSED"  # noqa: E731
    print(f"goals: accepted/s {ratio:.2f}x the bare app's (>= {SUBMIT_GOALS['ratio']}: "
          f"{verdict(ratio >= SUBMIT_GOALS['ratio'])}); p99 {ours['p99_ms']:.0f} ms (< {SUBMIT_GOALS['p99_ms']:.0f}: "
          f"{verdict(ours['p99_ms'] < SUBMIT_GOALS['p99_ms'])}); API process RSS growth {ours['rss_mb']:.0f} MB "
          f"(<= {SUBMIT_GOALS['rss_mb']:.0f}: {verdict(ours['rss_mb'] <= SUBMIT_GOALS['rss_mb'])})")
    if args.profile:
        print(f"where the API process's time went (py-spy, {args.profile / 'submit-burst.txt'}):")
        for name, share in profile_summary(args.profile / "submit-burst.txt"):
            print(f"  {name:<40} {share:>6.1%}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--submit-seconds", type=int, default=15)
    ap.add_argument("--profile", type=Path, default=None, help="sample the API process with py-spy during the burst")
    ap.add_argument("--only", choices=("get", "submit"), default=None)
    args = ap.parse_args()
    if args.only == "submit":
        tmp = Path(tempfile.mkdtemp(prefix="p3d-bench-"))
        (tmp / "payloads.json").write_text("{}")
        try:
            submit_burst(args, tmp)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return
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
        bare = subprocess.Popen([sys.executable, str(ROOT / "bench" / "bare_app.py"), str(bare_port), str(payload_file),
                                 str(tmp / "bare-get.db")])
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
    try:
        if args.only != "get":
            submit_burst(args, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
