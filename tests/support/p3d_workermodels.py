"""TEST-ONLY model adapters for the device worker tests: models that take real memory, run out of it, crash the
process, or hang.

They import only numpy and pydantic, so a worker's memory figures show what the models allocate rather than
what a library's import costs. Their "mesh" output is a one-triangle GLB written by hand for the same reason.
"""

from __future__ import annotations

import ctypes
import json
import os
import resource
import signal
import struct
import time
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from pocket3d.models import Device, ModelAdapter, ProgressFn, RunInputs

MB = 1024 * 1024
HOLD_LIMIT = 120.0  # seconds a held run waits for its release before it fails


def hold_until_released(path: str, progress: ProgressFn | None = None, at: float = 0.0) -> None:
    """Wait until a file exists at ``path`` (a test that acts while a stage runs releases it when done), reporting
    progress ``at`` meanwhile when given a ``progress``; fail after HOLD_LIMIT seconds."""
    held = time.monotonic() + HOLD_LIMIT
    while not Path(path).exists():
        if time.monotonic() > held:
            raise RuntimeError(f"held for {HOLD_LIMIT} s and never released: the test forgot to")
        time.sleep(0.05)
        if progress is not None:
            progress(at, "held")
IMPOSSIBLE_BYTES = 1 << 60  # more than any address space: the allocation fails whatever the overcommit setting


def touched_megabytes(megabytes: float) -> np.ndarray:
    """A buffer of that size with every page written, so all of it is resident (np.zeros would map lazily)."""
    buffer = np.empty(int(megabytes * MB), dtype=np.uint8)
    buffer.fill(1)
    return buffer


def write_triangle_glb(path: Path) -> Path:
    """The smallest valid GLB: one triangle, positions only."""
    positions = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0]], dtype=np.float32).tobytes()
    gltf = {
        "asset": {"version": "2.0"}, "scene": 0, "scenes": [{"nodes": [0]}], "nodes": [{"mesh": 0}],
        "meshes": [{"primitives": [{"attributes": {"POSITION": 0}}]}],
        "accessors": [{"bufferView": 0, "componentType": 5126, "count": 3, "type": "VEC3",
                       "min": [0, 0, 0], "max": [1, 1, 0]}],
        "bufferViews": [{"buffer": 0, "byteLength": len(positions)}],
        "buffers": [{"byteLength": len(positions)}],
    }
    text = json.dumps(gltf, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 4)
    body = struct.pack("<II", len(text), 0x4E4F534A) + text + struct.pack("<II", len(positions), 0x004E4942) + positions
    path.write_bytes(struct.pack("<III", 0x46546C67, 2, 12 + len(body)) + body)
    return path


class AllocatingParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    run_mb: float = Field(0, ge=0, le=8192, description="MB to allocate and touch for the run, freed at its end")
    seconds: float = Field(0.0, ge=0, le=3600, description="seconds to spend holding it, in progress steps")
    steps: int = Field(10, ge=1, le=10000, description="progress reports over those seconds")
    hold_until: str | None = Field(None, max_length=4096, description="a path: after its seconds the run waits "
                                   "until a file exists there (tests that act while stages run release them)")


class AllocatingTestModel(ModelAdapter):
    """TEST-ONLY: holds ``spec.options["load_mb"]`` MB while loaded (its load taking
    ``spec.options["load_seconds"]``) and ``params.run_mb`` more while it runs, for ``params.seconds``, reporting
    progress. Its outputs record which process and which load served the run, so a test can tell a resident
    model's reuse from a reload."""

    Params = AllocatingParams
    loads_in_this_process = 0

    def load(self, device: Device) -> None:
        self.device = device
        self.weights = touched_megabytes(float(self.spec.options.get("load_mb", 0)))
        time.sleep(float(self.spec.options.get("load_seconds", 0)))
        AllocatingTestModel.loads_in_this_process += 1
        self.load_number = AllocatingTestModel.loads_in_this_process

    def unload(self) -> None:
        self.weights = None
        super().unload()

    def run(self, inputs: RunInputs, params: AllocatingParams, progress: ProgressFn) -> dict[str, Path]:
        scratch = touched_megabytes(params.run_mb)
        for i in range(params.steps):
            time.sleep(params.seconds / params.steps)
            progress((i + 1) / (params.steps + 1), f"step {i + 1} of {params.steps}")
        if params.hold_until is not None:
            hold_until_released(params.hold_until)
        served = {"pid": os.getpid(), "load_number": self.load_number,
                  "device": self.device.id if self.device else None, "scratch_mb": scratch.nbytes / MB}
        report = inputs.work_dir / "served.json"
        report.write_text(json.dumps(served))
        return {"mesh": write_triangle_glb(inputs.work_dir / "mesh.glb"), "served": report}


_LEAKED: list[np.ndarray] = []


class LeakyTestModel(ModelAdapter):
    """TEST-ONLY: its load parks ``spec.options["load_mb"]`` MB in a module-level list that nothing ever clears,
    as a model with a global cache would: unloading it gives nothing back, only ending the process does."""

    def load(self, device: Device) -> None:
        self.device = device
        _LEAKED.append(touched_megabytes(float(self.spec.options.get("load_mb", 0))))

    def run(self, inputs: RunInputs, params: BaseModel, progress: ProgressFn) -> dict[str, Path]:
        return {"mesh": write_triangle_glb(inputs.work_dir / "mesh.glb")}


class MarkerParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    marker: str = Field(description="a file that exists once the first attempt has failed")


class OomOnceTestModel(ModelAdapter):
    """TEST-ONLY: the first run (while ``params.marker`` does not exist) fails a real allocation with numpy's
    MemoryError and creates the marker; later runs succeed."""

    Params = MarkerParams

    def load(self, device: Device) -> None:
        self.device = device

    def run(self, inputs: RunInputs, params: MarkerParams, progress: ProgressFn) -> dict[str, Path]:
        marker = Path(params.marker)
        if not marker.exists():
            marker.write_text("failed once")
            np.empty(IMPOSSIBLE_BYTES, dtype=np.uint8)
        progress(0.5, None)
        return {"mesh": write_triangle_glb(inputs.work_dir / "mesh.glb")}


class AlwaysOomTestModel(ModelAdapter):
    """TEST-ONLY: every run fails a real allocation (numpy's MemoryError)."""

    def load(self, device: Device) -> None:
        self.device = device

    def run(self, inputs: RunInputs, params: BaseModel, progress: ProgressFn) -> dict[str, Path]:
        progress(0.1, "allocating more than there is")
        np.empty(IMPOSSIBLE_BYTES, dtype=np.uint8)
        raise AssertionError("unreachable: the allocation above cannot succeed")


class CrashParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    how: Literal["sigkill", "abort", "segfault"] = Field("sigkill", description="how the process dies")


class CrashingTestModel(ModelAdapter):
    """TEST-ONLY: takes its whole process down mid-run: SIGKILL to itself (as the OOM killer would), abort(), or
    a real segmentation fault (reading address 0)."""

    Params = CrashParams

    def load(self, device: Device) -> None:
        self.device = device

    def run(self, inputs: RunInputs, params: CrashParams, progress: ProgressFn) -> dict[str, Path]:
        progress(0.2, "about to crash")
        time.sleep(0.05)
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # no core file to write on the way down
        if params.how == "sigkill":
            os.kill(os.getpid(), signal.SIGKILL)
        elif params.how == "abort":
            os.abort()
        else:
            ctypes.string_at(0)
        time.sleep(60)  # the signal is delivered before this ends
        raise AssertionError("unreachable: the process is dead")


class ForkingParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    grandchild_seconds: float = Field(30, ge=0, le=600, description="how long the forked process lives")


class ForkingTestModel(ModelAdapter):
    """TEST-ONLY: forks a process that outlives the run (as a data loader's workers may), writes its pid to
    ``grandchild.pid`` in the work dir, reports progress, then works on for a minute. The fork holds copies of
    every descriptor of the worker, its pipe to the scheduler among them."""

    Params = ForkingParams

    def load(self, device: Device) -> None:
        self.device = device

    def run(self, inputs: RunInputs, params: ForkingParams, progress: ProgressFn) -> dict[str, Path]:
        pid = os.fork()
        if pid == 0:
            time.sleep(params.grandchild_seconds)
            os._exit(0)
        (inputs.work_dir / "grandchild.pid").write_text(str(pid))
        for i in range(600):
            progress(i / 600, None)
            time.sleep(0.1)
        return {"mesh": write_triangle_glb(inputs.work_dir / "mesh.glb")}


class HangParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    seconds: float = Field(3600, ge=0, description="how long to sleep without a word")


class HangingTestModel(ModelAdapter):
    """TEST-ONLY: reports once that it started, then sleeps without another progress call, so neither a cancel
    nor anything else short of killing its process stops it."""

    Params = HangParams

    def load(self, device: Device) -> None:
        self.device = device

    def run(self, inputs: RunInputs, params: HangParams, progress: ProgressFn) -> dict[str, Path]:
        progress(0.0, "started; silent from now on")
        time.sleep(params.seconds)
        return {"mesh": write_triangle_glb(inputs.work_dir / "mesh.glb")}
