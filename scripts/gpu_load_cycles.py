"""On a machine with an NVIDIA GPU and torch: load and unload a torch model of a few GB through a real device
worker, many times, and check that NVML's used memory comes back to where it started.

    .venv/bin/python scripts/gpu_load_cycles.py [--cycles 100] [--gb 4] [--device 0]

It prints a table (cycle, NVML used MB after load, after unload, the load's measured MB) every 10 cycles and a
last line with the drift: used memory after the last unload minus before the first load. CI has no GPU, so this
is a script, not a test. Needs torch with CUDA in the same environment (``pip install torch``).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import textwrap
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=100)
    parser.add_argument("--gb", type=float, default=4.0)
    parser.add_argument("--device", type=int, default=0)
    args = parser.parse_args()

    import pynvml

    from pocket3d.models.spec import Feature, ModelSpec
    from pocket3d.scheduler.devices import nvml_devices
    from pocket3d.workers.supervisor import DeviceWorker

    gpu = next((d for d in nvml_devices() if d.index == args.device), None)
    if gpu is None:
        print("no NVIDIA GPU found through NVML", file=sys.stderr)
        return 2
    handle = pynvml.nvmlDeviceGetHandleByIndex(args.device)

    def used_mb() -> float:
        return pynvml.nvmlDeviceGetMemoryInfo(handle).used / 2**20

    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "p3d_torchblock.py").write_text(MODEL)
        spec = ModelSpec(id="torch_block", feature=Feature.MESH_GENERATION, supported_inputs=frozenset({"text"}),
                         supported_outputs=("glb",), vram_requirement=int(args.gb * 1024), devices=("cuda",),
                         options={"gb": args.gb})
        worker = DeviceWorker(gpu, on_progress=lambda *a: None, on_result=lambda r: None,
                              on_crash=lambda reason, stages: print("crash:", reason, file=sys.stderr),
                              env={"PYTHONPATH": tmp})
        worker.start()
        try:
            baseline = used_mb()
            print(f"{gpu.name}: {baseline:.0f} MB used before the first load (the worker's CUDA context not yet)")
            print(f"{'cycle':>6} {'after load MB':>14} {'after unload MB':>16} {'load measured MB':>17}")
            after_unload = baseline
            for cycle in range(1, args.cycles + 1):
                loaded = worker.load("torch_block", "p3d_torchblock:TorchBlockModel", spec)
                if not loaded.ok:
                    print(f"load {cycle} failed: {loaded.error_code}: {loaded.message}", file=sys.stderr)
                    return 1
                after_load = used_mb()
                worker.unload("torch_block")
                after_unload = used_mb()
                if cycle == 1 or cycle % 10 == 0:
                    print(f"{cycle:>6} {after_load:>14.0f} {after_unload:>16.0f} {loaded.memory_mb or 0:>17.0f}")
            print(f"drift after {args.cycles} cycles: {after_unload - baseline:+.0f} MB "
                  "(the worker's CUDA context, a few hundred MB, stays while the worker lives)")
        finally:
            worker.stop()
        print(f"after the worker stopped: {used_mb():.0f} MB used ({used_mb() - baseline:+.0f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
