"""On a machine with an NVIDIA GPU and torch: load and unload a torch model of a few GB through a real device
worker, many times, and check that NVML's used memory comes back to where it started.

    .venv/bin/python scripts/gpu_load_cycles.py [--cycles 100] [--gb 4] [--device 0]

It prints a table (cycle, NVML used MB after load, after unload, the load's measured MB) every 10 cycles, the
drift (used memory after the last unload minus after the first, when the worker's CUDA context exists already)
and what is left once the worker stopped. CI has no GPU, so this is a script, not a test (scripts/gpu-check.sh
runs it with the other GPU checks). Needs torch with CUDA in the same environment (``pip install torch``).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

MODEL = textwrap.dedent('''
    """A torch model of spec.options["gb"] GB of float16 weights on the worker's GPU (for gpu_load_cycles.py)."""
    import torch
    from pocket3d.models import ModelAdapter

    class TorchBlockModel(ModelAdapter):
        def load(self, device):
            self.device = device
            n = int(self.spec.options.get("gb", 4) * 1024**3 / 2)
            self.weights = torch.empty(n, dtype=torch.float16, device="cuda").normal_()

        def unload(self):
            self.weights = None
            super().unload()

        def run(self, inputs, params, progress):
            raise NotImplementedError
''')


@dataclass
class CycleResult:
    gpu_name: str
    before_worker_mb: float  # NVML used before the device worker started
    start_mb: float  # after the first unload: the worker's CUDA context is there, no model
    end_mb: float  # after the last unload
    after_stop_mb: float  # after the worker stopped
    load_measured_mb: float  # what the worker measured for one load
    peak_after_load_mb: float
    cycles: int
    seconds: float

    @property
    def drift_mb(self) -> float:
        return self.end_mb - self.start_mb

    @property
    def left_after_stop_mb(self) -> float:
        return self.after_stop_mb - self.before_worker_mb


def run_cycles(device: int = 0, gb: float = 4.0, cycles: int = 100,
               report: Callable[[int, float, float, float], None] | None = None,
               deadline: float | None = None) -> CycleResult:
    """Load and unload the model ``cycles`` times through a real device worker (fewer if time.monotonic() passes
    ``deadline``: the result says how many); raises RuntimeError when there is no such GPU or a load fails."""
    import pynvml

    from pocket3d.models.spec import Feature, ModelSpec
    from pocket3d.scheduler.devices import nvml_devices
    from pocket3d.workers.supervisor import DeviceWorker

    gpu = next((d for d in nvml_devices() if d.index == device), None)
    if gpu is None:
        raise RuntimeError(f"no NVIDIA GPU {device} found through NVML")
    handle = pynvml.nvmlDeviceGetHandleByIndex(device)

    def used_mb() -> float:
        return pynvml.nvmlDeviceGetMemoryInfo(handle).used / 2**20

    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "p3d_torchblock.py").write_text(MODEL)
        spec = ModelSpec(id="torch_block", feature=Feature.MESH_GENERATION, supported_inputs=frozenset({"text"}),
                         supported_outputs=("glb",), vram_requirement=int(gb * 1024), devices=("cuda",),
                         options={"gb": gb})
        worker = DeviceWorker(gpu, on_progress=lambda *a: None, on_result=lambda r: None,
                              on_crash=lambda reason, stages: print("crash:", reason, file=sys.stderr),
                              env={"PYTHONPATH": tmp})
        before = used_mb()
        worker.start()
        start = end = peak = measured = 0.0
        done = 0
        try:
            for cycle in range(1, cycles + 1):
                if deadline is not None and cycle > 1 and time.monotonic() > deadline:
                    break
                loaded = worker.load("torch_block", "p3d_torchblock:TorchBlockModel", spec)
                if not loaded.ok:
                    raise RuntimeError(f"load {cycle} failed: {loaded.error_code}: {loaded.message}")
                after_load = used_mb()
                peak, measured = max(peak, after_load), max(measured, loaded.memory_mb or 0.0)
                worker.unload("torch_block")
                end = used_mb()
                if cycle == 1:
                    start = end
                done = cycle
                if report is not None and (cycle == 1 or cycle % 10 == 0):
                    report(cycle, after_load, end, loaded.memory_mb or 0.0)
        finally:
            worker.stop()
        after_stop = used_mb()
    return CycleResult(gpu.name, before, start, end, after_stop, measured, peak, done, time.monotonic() - started)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=100)
    parser.add_argument("--gb", type=float, default=4.0)
    parser.add_argument("--device", type=int, default=0)
    args = parser.parse_args()
    print(f"{'cycle':>6} {'after load MB':>14} {'after unload MB':>16} {'load measured MB':>17}")
    try:
        result = run_cycles(args.device, args.gb, args.cycles,
                            lambda c, loaded, unloaded, measured: print(
                                f"{c:>6} {loaded:>14.0f} {unloaded:>16.0f} {measured:>17.0f}"))
    except RuntimeError as e:
        print(e, file=sys.stderr)
        return 2
    print(f"{result.gpu_name}: {result.before_worker_mb:.0f} MB used before the worker started")
    print(f"drift from the first unload to the last: {result.drift_mb:+.0f} MB over {result.cycles} cycles "
          "(the worker's CUDA context stays while the worker lives)")
    print(f"after the worker stopped: {result.after_stop_mb:.0f} MB used ({result.left_after_stop_mb:+.0f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
