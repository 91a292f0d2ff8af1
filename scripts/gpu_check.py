"""The GPU check (run it through scripts/gpu-check.sh): on a machine with an NVIDIA GPU and no internet, in under
four minutes, a table of

1. the NVML inventory (driver, CUDA driver, each GPU's memory, temperature, compute capability) and what torch
   and pocket3d's scheduler see of it;
2. a torch model of a few GB loaded and unloaded 100 times through a real device worker: NVML's used memory
   after the last unload must be within 64 MB of what it was after the first, and within 64 MB of the start
   once the worker has stopped;
3. Hunyuan3D-2's real shape pipeline (hy3dgen) on tiny random weights, built here (tests/support/tiny_hunyuan3d.py),
   through a real pocket3d server on cuda:0, cold and warm;
4. what the scheduler accounts to the models resident on cuda:0 against what NVML shows the device worker
   holding beyond its CUDA context (the scheduler must not account less, or it would overfill the device).

``--cpu`` runs part 3 on the CPU instead and skips the rest: a check of the script itself on a machine without a
GPU. Exit status 0 when every check passed.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "scripts"), str(ROOT / "tests" / "support")]

TOLERANCE_MB = 64
FAST = "{steps: 3, octree_resolution: 32, num_chunks: 4000, max_faces: 5000}"
Row = tuple[str, str, str, str]  # check, measured, expected, verdict


def verdict(ok: bool | None) -> str:
    return "SKIP" if ok is None else ("PASS" if ok else "FAIL")


def inventory(rows: list[Row]) -> dict:
    """NVML, torch and pocket3d's view of the GPUs; returns facts the later checks use."""
    facts: dict = {"gpus": 0}
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception as e:
        rows.append(("NVML", f"not available: {type(e).__name__}: {e}", "an NVIDIA driver", verdict(False)))
        return facts
    cuda = pynvml.nvmlSystemGetCudaDriverVersion_v2()
    driver = _text(pynvml.nvmlSystemGetDriverVersion())
    rows.append(("NVML driver", f"{driver}, CUDA {cuda // 1000}.{cuda % 1000 // 10}", "a driver", verdict(True)))
    facts["gpus"] = pynvml.nvmlDeviceGetCount()
    for i in range(facts["gpus"]):
        h = pynvml.nvmlDeviceGetHandleByIndex(i)
        mem = pynvml.nvmlDeviceGetMemoryInfo(h)
        major, minor = pynvml.nvmlDeviceGetCudaComputeCapability(h)
        temp = pynvml.nvmlDeviceGetTemperature(h, pynvml.NVML_TEMPERATURE_GPU)
        rows.append((f"GPU {i}", f"{_text(pynvml.nvmlDeviceGetName(h))}, {mem.total >> 20} MB, {mem.used >> 20} MB "
                     f"used, {temp} C, compute {major}.{minor}", "", verdict(True)))
        if i == 0:
            facts["free_mb"], facts["total_mb"] = mem.free >> 20, mem.total >> 20
    if not facts["gpus"]:
        rows.append(("GPUs", "none", "at least one", verdict(False)))
        return facts
    try:
        import torch

        ok = torch.cuda.is_available()
        seen = f"{torch.cuda.device_count()} GPU(s), {torch.cuda.get_device_name(0)}" if ok else "no CUDA device"
        rows.append(("torch", f"{torch.__version__} (CUDA {torch.version.cuda}): {seen}",
                     "a CUDA build that sees GPU 0", verdict(ok)))
        facts["torch"] = ok
    except ImportError as e:
        rows.append(("torch", f"not importable: {e}", "a CUDA build", verdict(False)))
    from pocket3d.config import GpuSettings
    from pocket3d.scheduler.devices import budget_mb, nvml_devices

    for device in nvml_devices():
        rows.append((f"pocket3d {device.id}", f"{device.name}, {device.memory_total} MB, budget "
                     f"{budget_mb(device, GpuSettings()):.0f} MB (defaults)", "every NVML GPU", verdict(True)))
    return facts


def load_cycles(rows: list[Row], facts: dict, cycles: int, gb: float | None, deadline: float) -> None:
    if not facts.get("torch"):
        rows.append((f"load/unload x{cycles}", "torch cannot use the GPU", "", verdict(None)))
        return
    from gpu_load_cycles import run_cycles

    size = gb if gb else round(min(4.0, facts["free_mb"] * 0.4 / 1024), 1)

    def progress(cycle: int, loaded: float, unloaded: float, measured: float) -> None:
        print(f"  cycle {cycle:>3}: {loaded:>8.0f} MB used loaded, {unloaded:>8.0f} MB unloaded", flush=True)

    result = run_cycles(0, size, cycles, progress, deadline=deadline)
    facts["context_mb"] = result.start_mb - result.before_worker_mb
    ok = result.cycles == cycles and abs(result.drift_mb) <= TOLERANCE_MB and \
        abs(result.left_after_stop_mb) <= TOLERANCE_MB
    rows.append((f"load/unload {size:g} GB x{cycles}",
                 f"{result.cycles} cycles in {result.seconds:.0f} s; drift {result.drift_mb:+.0f} MB; after the worker "
                 f"stopped {result.left_after_stop_mb:+.0f} MB; one load measured {result.load_measured_mb:.0f} MB; "
                 f"worker's CUDA context {facts['context_mb']:.0f} MB",
                 f"{cycles} cycles, both within {TOLERANCE_MB} MB", verdict(ok)))


def server_path(rows: list[Row], facts: dict, device: str) -> None:
    """Hunyuan3D-2 on tiny weights through a real server on ``device`` (cuda:0, or cpu with --cpu)."""
    if device.startswith("cuda") and not facts.get("torch"):
        rows.append(("Hunyuan3D-2 via the server", "torch cannot use the GPU", "", verdict(None)))
        return
    import httpx
    import tiny_hunyuan3d
    from adapter_harness import TORCHVISION_STANDIN, standin_env, torchvision_missing
    from PIL import Image, ImageDraw
    from server import ServerProcess

    kind = device.split(":")[0]
    with tempfile.TemporaryDirectory(prefix="p3d-gpu-check-") as tmp_name:
        tmp = Path(tmp_name)
        if torchvision_missing():  # hy3dgen imports torchvision; the tests' stand-in has what it uses
            sys.path.insert(0, str(TORCHVISION_STANDIN))
        weights = tiny_hunyuan3d.build(tmp / "hunyuan3d-2")
        models = tmp / "models.yaml"
        models.write_text(f"""
models:
  mesh_generation:
    hunyuan3d-2:
      class: "pocket3d.models.adapters.hunyuan3d:Hunyuan3DShapeModel"
      supported_inputs: ["image"]
      supported_outputs: ["glb"]
      devices: ["{kind}"]
      textured: false
      paint_with: builtin_projection_paint
      options: {{weights: {weights}, presets: {{low: {FAST}, medium: {FAST}, high: {FAST}}}}}
  texture_generation:
    builtin_projection_paint:
      class: "pocket3d.models.builtin.texturing:ProjectionTextureModel"
      supported_inputs: ["mesh", "text", "image", "multiview"]
      supported_outputs: ["glb"]
""")
        image = Image.new("RGBA", (256, 256), (0, 0, 0, 0))
        ImageDraw.Draw(image).ellipse((48, 32, 208, 224), fill=(200, 60, 40, 255))
        image.save(tmp / "object.png")
        env = standin_env(standins=False, MODEL_CHECKSUM_DISABLED="1",
                          POCKET3D_GPU__AUTO_DETECT="true" if kind == "cuda" else "false")
        srv = ServerProcess(tmp / "data", models=models, env=env).start(timeout=90)
        try:
            with srv.client() as c:
                c.timeout = 180
                timings, jobs = [], []
                for _ in range(2):  # cold (load), then warm; an upload is deleted when its job ends
                    started = time.monotonic()
                    with open(tmp / "object.png", "rb") as f:
                        file_id = c.post("/files", files={"file": ("object.png", f, "image/png")}).json()["file_id"]
                    job = c.post("/mesh/generate", json={"images": [file_id], "model_preference": "hunyuan3d-2",
                                                         "seed": 1}).json()
                    while job.get("status") in ("queued", "running") and time.monotonic() - started < 170:
                        time.sleep(0.2)
                        job = c.get(f"/jobs/{job['job_id']}").json()
                    jobs.append(job)
                    timings.append(time.monotonic() - started)
                devices = {d["id"]: d for d in c.get("/system/devices").json()}
                worker_mb = _nvml_process_mb(devices.get(device, {}).get("worker_pid")) if kind == "cuda" else None
        finally:
            srv.stop()
    ran = devices.get(device, {})
    ok = all(j.get("status") == "succeeded" for j in jobs) and "hunyuan3d-2" in ran.get("resident_models", [])
    why = "" if ok else f"; {jobs[-1].get('status')}: {jobs[-1].get('error')}; {device}: {ran}"
    rows.append((f"Hunyuan3D-2 (tiny) via the server on {device}",
                 f"{', '.join(j.get('status', '?') for j in jobs)}; cold {timings[0]:.1f} s, warm {timings[1]:.1f} s; "
                 f"resident on {device}: {ran.get('resident_models')}{why}",
                 f"both succeeded, the model on {device}", verdict(ok)))
    if kind == "cuda":
        accounting(rows, facts, ran, worker_mb)


def _nvml_process_mb(pid: int | None) -> float | None:
    """What NVML says process ``pid`` holds on GPU 0; None where it cannot tell."""
    import pynvml

    try:
        for proc in pynvml.nvmlDeviceGetComputeRunningProcesses(pynvml.nvmlDeviceGetHandleByIndex(0)):
            if proc.pid == pid and proc.usedGpuMemory is not None:
                return proc.usedGpuMemory / 2**20
    except pynvml.NVMLError:
        pass
    return None


def accounting(rows: list[Row], facts: dict, device: dict, worker_mb: float | None) -> None:
    """The scheduler's books for cuda:0 against NVML, both read while the server ran, after the two jobs."""
    pid = device.get("worker_pid")
    scheduled = device.get("scheduled_mb", 0)
    if worker_mb is None:  # in a container NVML may not see the worker's pid: measure nothing rather than guess
        rows.append(("scheduler vs NVML on cuda:0", f"scheduled {scheduled} MB; NVML shows no process {pid} (a PID "
                     f"namespace?); device used {device.get('memory_used_mb')} MB of {device.get('memory_total_mb')}",
                     "", verdict(None)))
        return
    context = facts.get("context_mb", 0.0)
    models_mb = max(0.0, worker_mb - context)
    rows.append(("scheduler vs NVML on cuda:0",
                 f"scheduled {scheduled} MB for {device.get('resident_models')}; NVML: worker {worker_mb:.0f} MB, "
                 f"{models_mb:.0f} MB beyond its CUDA context ({context:.0f} MB); budget {device.get('budget_mb')} MB",
                 f"scheduled >= NVML's models - {TOLERANCE_MB} MB", verdict(scheduled >= models_mb - TOLERANCE_MB)))


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def print_table(rows: list[Row]) -> None:
    width = [max(len(r[i]) for r in rows + [("check", "measured", "expected", "")]) for i in range(3)]
    width[1] = min(width[1], 100)
    print()
    print(f"{'check':<{width[0]}}  {'result':<6}  {'measured':<{width[1]}}  expected")
    print(f"{'-' * width[0]}  ------  {'-' * width[1]}  {'-' * 8}")
    for check, measured, expected, result in rows:
        lines = [measured[i:i + width[1]] for i in range(0, max(len(measured), 1), width[1])]
        print(f"{check:<{width[0]}}  {result:<6}  {lines[0]:<{width[1]}}  {expected}")
        for more in lines[1:]:
            print(f"{'':<{width[0]}}  {'':<6}  {more}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=100)
    parser.add_argument("--gb", type=float, default=None, help="the load/unload model's size (default: 4, less on "
                        "a small card)")
    parser.add_argument("--cpu", action="store_true", help="no GPU here: run the server check on the CPU only")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    started = time.monotonic()
    rows: list[Row] = []
    try:
        if args.cpu:
            rows.append(("NVML, load/unload, accounting", "not run (--cpu)", "", verdict(None)))
            server_path(rows, {}, "cpu")
        else:
            print("NVML inventory ...", flush=True)
            facts = inventory(rows)
            print(f"load/unload x{args.cycles} ...", flush=True)
            load_cycles(rows, facts, args.cycles, args.gb, deadline=started + 110)
            print("Hunyuan3D-2 through the server on cuda:0 ...", flush=True)
            server_path(rows, facts, "cuda:0")
    except Exception as e:  # report what ran so far, and why the rest did not
        rows.append(("(stopped)", f"{type(e).__name__}: {e}", "", verdict(False)))
    print_table(rows)
    print(f"\n{time.monotonic() - started:.0f} s in all")
    return 0 if all(r[3] == "PASS" or (args.cpu and r[3] == "SKIP") for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
