"""The messages between the scheduler's :class:`~pocket3d.workers.supervisor.DeviceWorker` and its child process.

They travel pickled over one duplex pipe (``multiprocessing.connection.Connection`` on a socketpair), each a small
frozen dataclass: file *paths*, never file contents, so a message stays a few hundred bytes.

Parent -> child                                 Child -> parent
  Hello(device, budget_mb, log_level, warm)       Ready(pid, memory_mb)                 once, after Hello
  Load(request_id, model_id, adapter, spec)       LoadDone(request_id, LoadResult, resident)
  Unload(request_id, model_id)                    UnloadDone(request_id, UnloadResult, resident)
  RunStage(StageRequest)                          Progress(stage_id, fraction, message)  rate-limited*
  Cancel(stage_id)                                StageDone(StageResult, resident)
  Shutdown()

*A progress call is sent when its message is new, else at most every 0.1 s. A warning (models.spec.warn) is
sent at once as the progress message and comes back in ``StageResult.warnings``.

Every reply carries ``resident`` (model id -> measured MB), taken when it is sent, so the parent's view of what is
loaded follows the child's own in order. A stage whose model is not resident loads it first (from the request's
adapter and spec) and says so in ``StageResult.load_seconds``.

This module imports nothing heavy: the child imports it at start-up, before it knows which model it will host.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pocket3d.models.spec import ModelSpec, RunInputs

# StageResult.error_code values. The first six are job error codes the scheduler publishes (pocket3d.errors
# has them, or gets them with this scheduler); a MeshError's own code passes through as it is.
CANCELLED = "CANCELLED"
INVALID_INPUT = "INVALID_INPUT"
MODEL_ERROR = "MODEL_ERROR"
OUT_OF_MEMORY = "OUT_OF_MEMORY"
WORKER_CRASHED = "WORKER_CRASHED"
TIMEOUT = "TIMEOUT"
STORAGE_UNAVAILABLE = "STORAGE_UNAVAILABLE"  # a disk write failed (full, over a limit): run it again, uncounted


@dataclass(frozen=True)
class StageRequest:
    stage_id: int
    model_id: str
    adapter: str  # "package.module:Class" or a pocket3d.models entry-point name, resolved in the child
    spec: ModelSpec
    inputs: RunInputs  # paths valid in the child (same machine); outputs go to inputs.work_dir
    params: dict  # validated in the child with the adapter's Params
    # job_id, stage, model: what the scheduler's lines about this stage carry, so the worker's lines carry it too
    log_context: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class StageResult:
    stage_id: int
    files: dict[str, Path] | None  # on success: output name -> file the model wrote
    error_code: str | None  # None on success
    message: str
    # The model's memory while it ran: what its load added, plus how far the process rose above its level at the
    # stage's start (peak RSS on CPU; the CUDA allocator's peak / NVML on GPU). None when it was not measured.
    peak_memory_mb: float | None
    seconds: float  # the stage's run, not counting an implicit load
    load_seconds: float | None = None  # set when the model was not resident and the stage loaded it first
    process_peak_mb: float | None = None  # the whole worker process's peak during the stage
    warnings: tuple[tuple[str, str], ...] = ()  # (code, message) the model raised with models.spec.warn


@dataclass(frozen=True)
class LoadResult:
    ok: bool
    seconds: float
    memory_mb: float | None  # what the load added to the process (RSS on CPU; device memory on GPU)
    error_code: str | None = None  # MODEL_ERROR, OUT_OF_MEMORY, WORKER_CRASHED, TIMEOUT
    message: str = ""


@dataclass(frozen=True)
class UnloadResult:
    ok: bool
    seconds: float
    expected_mb: float  # what the model's load was measured to take
    returned_mb: float  # by how much the process shrank when it was dropped
    restarted: bool = False  # the memory did not come back, so the worker was restarted to return it
    message: str = ""

    @property
    def retained_mb(self) -> float:
        return max(0.0, self.expected_mb - self.returned_mb)


# -- parent -> child ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Hello:
    device: dict[str, Any]  # pocket3d.models.spec.Device fields, as a dict so start-up needs no pocket3d.models
    budget_mb: float  # what the scheduler may fill on this device: named in out-of-memory messages
    log_level: int
    # (adapter, spec) of the models this device may host: their libraries are imported in the background as soon
    # as the child is up, so the first load does not pay for them
    warm: tuple[tuple[str, ModelSpec], ...] = ()
    log_format: str = "text"  # the server's: text or json


@dataclass(frozen=True)
class Load:
    request_id: int
    model_id: str
    adapter: str
    spec: ModelSpec


@dataclass(frozen=True)
class Unload:
    request_id: int
    model_id: str


@dataclass(frozen=True)
class RunStage:
    request: StageRequest


@dataclass(frozen=True)
class Cancel:
    stage_id: int


@dataclass(frozen=True)
class Shutdown:
    pass


# -- child -> parent ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ready:
    pid: int
    memory_mb: float  # the idle process's RSS


@dataclass(frozen=True)
class LoadDone:
    request_id: int
    result: LoadResult
    resident: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class UnloadDone:
    request_id: int
    result: UnloadResult
    resident: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Progress:
    stage_id: int
    fraction: float
    message: str | None


@dataclass(frozen=True)
class StageDone:
    result: StageResult
    resident: dict[str, float] = field(default_factory=dict)
