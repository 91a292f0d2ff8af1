"""Run every available real model once through a pocket3d server and print a table: time and peak memory.

For a machine with a GPU, the models' libraries and their weights. It starts a server on the shipped registry
(or ``--models``), or uses a running one (``--url``), asks /system/models which models are available, and runs
each once on the shared test data (../shared/testdata, or ``--testdata``) through the HTTP API:

    .venv/bin/python scripts/validate_models.py                    # every available non-built-in model
    .venv/bin/python scripts/validate_models.py --only hunyuan3d-2 --only unirig
    .venv/bin/python scripts/validate_models.py --url http://gpu-box:8000 --key p3d_...

Times are the job's wall time from submission and the scheduler's measured load and run times of the model's
own stage; peak is the most one stage held on its device as the device worker measured it (torch's reserved
memory plus what NVML sees outside it on CUDA). Helper stages a job needs (text to image, background removal,
a paint stage) run too and are listed under the job's stages. Exit status 1 when any model failed.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
TESTDATA = ROOT.parent / "shared" / "testdata"
STAGE_ONLY = {"text_to_image", "background_removal"}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", help="a running server (default: start one on the registry)")
    ap.add_argument("--key", help="API key, when the server has auth on")
    ap.add_argument("--models", type=Path, default=ROOT / "config" / "models.yaml")
    ap.add_argument("--testdata", type=Path, default=TESTDATA)
    ap.add_argument("--only", action="append", help="a model id to run (repeatable)")
    ap.add_argument("--builtin", action="store_true", help="include the built-in CPU models")
    ap.add_argument("--quality", default="medium", choices=["low", "medium", "high"])
    ap.add_argument("--timeout", type=float, default=1800, help="seconds per job")
    ap.add_argument("--text", action="store_true",
                    help="ask mesh models for a prompt, not an image (image models get it drawn first)")
    args = ap.parse_args()

    server = None if args.url else _start(args.models)
    url = args.url or server[0]
    headers = {"Authorization": f"Bearer {args.key}"} if args.key else {}
    failed = False
    try:
        with httpx.Client(base_url=f"{url}/api/v1", headers=headers, timeout=120) as client:
            models = client.get("/system/models").json()["models"]
            chosen = [m for m in models if m["feature"] not in STAGE_ONLY and m["available"]
                      and (args.builtin or not m["id"].startswith("builtin_"))
                      and (not args.only or m["id"] in args.only)]
            for m in models:
                if args.only and m["id"] in args.only and not m["available"]:
                    print(f"{m['id']}: unavailable: {'; '.join(m['unavailable_reasons'])}", file=sys.stderr)
            if not chosen:
                print("no available model to run (see GET /api/v1/system/models for why)", file=sys.stderr)
                return 1
            rows = []
            for m in chosen:
                row = _run(client, m, args.testdata, args.quality, args.timeout, args.text)
                failed |= row["status"] != "succeeded"
                rows.append(row)
            measured = {m["id"]: m for m in client.get("/system/models").json()["models"]}
            devices = client.get("/system/devices").json()
    finally:
        if server is not None:
            server[1].terminate()
            server[1].wait(30)
    _table(rows, measured, devices)
    return 1 if failed else 0


def _start(models: Path) -> tuple[str, subprocess.Popen]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data = Path(tempfile.mkdtemp(prefix="pocket3d-validate-"))
    env = {**os.environ, "POCKET3D_DATA_DIR": str(data)}
    log = open(data / "server.log", "wb")  # noqa: SIM115 - open for the server's lifetime
    proc = subprocess.Popen([sys.executable, "-m", "pocket3d", "--models", str(models), "serve", "--port",
                             str(port)], env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        if proc.poll() is not None:
            raise SystemExit(f"the server exited with {proc.returncode}; see {data / 'server.log'}")
        try:
            if httpx.get(f"{url}/api/v1/system/health", timeout=1).status_code == 200:
                print(f"server on {url}, data and log in {data}", file=sys.stderr)
                return url, proc
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise SystemExit("the server did not start in 60 s")


def _upload(client: httpx.Client, path: Path) -> str:
    with open(path, "rb") as f:
        r = client.post("/files", files={"file": (path.name, f, "application/octet-stream")})
    r.raise_for_status()
    return r.json()["file_id"]


def _request(client: httpx.Client, m: dict, data: Path, text: bool = False) -> tuple[str, dict]:
    """The route and body for one run of the model on the shared test data."""
    takes = set(m["supported_inputs"])
    if text and m["feature"] == "mesh_generation":
        return "/mesh/generate", {"text_prompt": "a wooden chair with four legs"}
    image = data / "images" / "typical_creature_elephant.png"
    mesh = data / "meshes" / sorted(p.name for p in (data / "meshes").glob("*.obj"))[0]
    if m["feature"] == "mesh_generation":
        if "image" in takes:
            return "/mesh/generate", {"images": [_upload(client, image)]}
        if "multiview" in takes:
            return "/mesh/generate", {"images": [_upload(client, p) for p in sorted((data / "multiview").glob("*.png"))]}
        return "/mesh/generate", {"text_prompt": "a wooden chair with four legs"}
    if m["feature"] == "texture_generation":
        body: dict = {"mesh": _upload(client, mesh)}
        if "image" in takes:
            body["images"] = [_upload(client, image)]
        else:
            body["text_prompt"] = "weathered bronze"
        return "/texture/generate", body
    if m["feature"] == "segmentation":
        if takes == {"glb"}:  # completes parts: segment first, with the built-in model
            first = _wait(client, _submit(client, "/segment", {"mesh": _upload(client, mesh),
                                                                      "model_preference": "builtin_segmentation"}), 600)
            seg = next(o for o in first["outputs"] if o["name"] == "model.glb")
            path = Path(tempfile.mkdtemp()) / "segmented.glb"
            path.write_bytes(client.get(seg["url"].removeprefix("/api/v1")).content)
            return "/segment", {"mesh": _upload(client, path)}
        return "/segment", {"mesh": _upload(client, mesh)}
    return "/rig", {"mesh": _upload(client, mesh)}


def _submit(client: httpx.Client, route: str, body: dict) -> str:
    r = client.post(route, json=body)
    if r.status_code != 202:
        raise RuntimeError(f"{route}: {r.status_code} {r.text}")
    return r.json()["job_id"]


def _wait(client: httpx.Client, job_id: str, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/jobs/{job_id}").json()
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return job
        time.sleep(0.5)
    client.post(f"/jobs/{job_id}/cancel")
    return {**job, "status": "timed out"}


def _run(client: httpx.Client, m: dict, data: Path, quality: str, timeout: float, text: bool = False) -> dict:
    print(f"running {m['id']} ...", file=sys.stderr)
    started = time.monotonic()
    try:
        route, body = _request(client, m, data, text)
        body.update(model_preference=m["id"], quality=quality, seed=0)
        job = _wait(client, _submit(client, route, body), timeout)
    except (RuntimeError, httpx.HTTPError) as e:
        return {"id": m["id"], "feature": m["feature"], "status": "refused", "seconds": 0.0, "detail": str(e)}
    detail = job.get("error", {}).get("message", "") if job["status"] != "succeeded" else \
        " > ".join(f"{s['name']}({s['model'] or 'pocket3d'})" for s in job["stages"])
    return {"id": m["id"], "feature": m["feature"], "status": job["status"],
            "seconds": time.monotonic() - started, "detail": detail}


def _table(rows: list[dict], measured: dict, devices: list[dict]) -> None:
    def num(v: float | None, fmt: str) -> str:
        return "-" if v is None else format(v, fmt)

    print("| model | feature | status | job s | load s | run s | peak MB | stages / error |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        m = measured.get(r["id"], {})
        print(f"| {r['id']} | {r['feature']} | {r['status']} | {r['seconds']:.1f} | "
              f"{num(m.get('measured_load_seconds'), '.1f')} | {num(m.get('measured_run_seconds'), '.1f')} | "
              f"{num(m.get('measured_peak_mb'), '.0f')} | {r['detail']} |")
    for d in devices:
        print(f"device {d['id']} ({d['name']}): {d['memory_used_mb']} of {d['memory_total_mb']} MB used, "
              f"resident: {', '.join(d['resident_models']) or 'none'}")


if __name__ == "__main__":
    sys.exit(main())
