"""The real-model adapters' own cost on the CPU, from tiny random weights: what pocket3d adds around a model.

Builds the tests' tiny weights (Hunyuan3D-2 shape in hy3dgen's layout, a diffusers pipeline, a rembg ONNX
model: tests/support/tiny_*.py), starts a server on the tests' registry of them, and runs
scripts/validate_models.py against it twice (the first run loads the models, the second finds them resident),
for image -> mesh (remove_background -> Hunyuan3D-2 -> paint -> export) and text -> mesh (text_to_image first).
The numbers are pocket3d's and the libraries' overhead, not the models' speed: the weights are one layer wide.

    .venv/bin/python bench/adapters_cpu.py
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SUPPORT = ROOT / "tests" / "support"
sys.path[:0] = [str(SUPPORT)]

import httpx  # noqa: E402
from adapter_harness import TORCHVISION_STANDIN, standin_env, torchvision_missing, write_models  # noqa: E402
from server import ServerProcess  # noqa: E402


def main() -> None:
    if torchvision_missing():
        sys.path.insert(0, str(TORCHVISION_STANDIN))
    import tiny_diffusers
    import tiny_hunyuan3d
    import tiny_rembg

    # The tests' registry, so the bench measures exactly what the tests prove works.
    sys.path.insert(0, str(ROOT / "tests"))
    from test_adapter_hunyuan3d import registry

    work = Path(tempfile.mkdtemp(prefix="pocket3d-bench-adapters-"))
    weights = {"hunyuan": tiny_hunyuan3d.build(work / "hunyuan3d-2"), "sd": tiny_diffusers.build(work / "sd"),
               "u2net": tiny_rembg.build(work / "u2net")}
    server = ServerProcess(work / "data", models=write_models(work, registry(weights)),
                           env=standin_env(standins=False, MODEL_CHECKSUM_DISABLED="1")).start(timeout=60)
    try:
        for label in ("cold (loads the models)", "warm (models resident)"):
            print(f"\n{label}")
            for extra in ([], ["--text"]):
                started = time.monotonic()
                out = subprocess.run([sys.executable, str(ROOT / "scripts" / "validate_models.py"), "--url",
                                      server.url, "--only", "hunyuan3d-2", "--quality", "low", *extra],
                                     capture_output=True, text=True, check=False)
                rows = [line for line in out.stdout.splitlines() if line.startswith("|")]
                print(f"{'text' if extra else 'image'} -> mesh, {time.monotonic() - started:.1f} s wall")
                print("\n".join(rows) if rows else out.stdout + out.stderr)
        with httpx.Client(base_url=f"{server.url}/api/v1") as c:
            for m in c.get("/system/models").json()["models"]:
                if m["measured_peak_mb"] is not None:
                    print(f"{m['id']}: peak {m['measured_peak_mb']:.0f} MB, load {m['measured_load_seconds']} s, "
                          f"run {m['measured_run_seconds']} s")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
