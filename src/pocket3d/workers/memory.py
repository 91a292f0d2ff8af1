"""How a worker process measures its own memory: now, and the peak since a mark.

CPU (and virtual CPU devices): the resident set. "Now" is RSS from ``/proc/self/statm``; the peak is the kernel's
high-water mark ``VmHWM`` from ``/proc/self/status``, which writing ``5`` to ``/proc/self/clear_refs`` resets to the
current RSS (Linux 4.0+). Where that is refused (or there is no /proc), a thread samples RSS through psutil every
10 ms instead; a spike shorter than that can be missed. ``POCKET3D_WORKER_RSS_SAMPLING=1`` forces the sampler.

CUDA: device memory of this process. "Now" is NVML's per-process used memory (it includes the CUDA context and
the caching allocator's spare blocks: what the device really lost), else torch's reserved memory. The peak is
``torch.cuda.max_memory_reserved()`` plus the memory outside the allocator (context, cuDNN/cuBLAS workspaces) as
NVML sees it; reset with ``torch.cuda.reset_peak_memory_stats()``. Reserved rather than allocated, because the
blocks the allocator keeps are unavailable to every other model until ``empty_cache``. Without torch the peak is
just "now" at the stage's end. In a container whose PID namespace hides host PIDs from NVML, only torch's figures
are available.

:class:`StageMemory` turns the one process-wide high-water mark into per-stage peaks when stages overlap: before
any stage resets the mark, the mark so far is folded into every open stage's peak. Overlapping stages therefore
each see the other's allocations (an overestimate, never an underestimate).
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from typing import Any, Protocol

log = logging.getLogger(__name__)

MB = 1024 * 1024
SAMPLE_INTERVAL = 0.01  # seconds between RSS samples where the kernel's high-water mark cannot be reset


class MemoryProbe(Protocol):
    def current_mb(self) -> float: ...

    def peak_mb(self) -> float: ...  # the most held since the last reset_peak()

    def reset_peak(self) -> None: ...


class HighWaterRss:
    """RSS and the kernel's resettable high-water mark (Linux)."""

    def __init__(self) -> None:
        self._page = os.sysconf("SC_PAGE_SIZE")

    @staticmethod
    def available() -> bool:
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            return True
        except OSError:
            return False

    def current_mb(self) -> float:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * self._page / MB

    def peak_mb(self) -> float:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        return self.current_mb()

    def reset_peak(self) -> None:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")


class SampledRss:
    """RSS sampled by a thread: the fallback where the high-water mark cannot be reset."""

    def __init__(self) -> None:
        import psutil  # only here: the common path needs nothing but /proc

        self._process = psutil.Process()
        self._lock = threading.Lock()
        self._peak = self.current_mb()
        threading.Thread(target=self._sample, name="rss-sampler", daemon=True).start()

    def current_mb(self) -> float:
        return self._process.memory_info().rss / MB

    def peak_mb(self) -> float:
        now = self.current_mb()
        with self._lock:
            self._peak = max(self._peak, now)
            return self._peak

    def reset_peak(self) -> None:
        now = self.current_mb()
        with self._lock:
            self._peak = now

    def _sample(self) -> None:
        while True:
            time.sleep(SAMPLE_INTERVAL)
            now = self.current_mb()
            with self._lock:
                if now > self._peak:
                    self._peak = now


class CudaMemory:
    """This process's memory on one GPU (the only one it sees: CUDA_VISIBLE_DEVICES names it)."""

    def __init__(self, nvml_index: int):
        self._nvml_index = nvml_index
        self._handle: Any = None
        self._nvml_failed = False

    def current_mb(self) -> float:
        seen = self._nvml_process_mb()
        if seen is not None:
            return seen
        torch = _cuda_torch()
        return torch.cuda.memory_reserved() / MB if torch is not None else 0.0

    def peak_mb(self) -> float:
        now = self.current_mb()
        torch = _cuda_torch()
        if torch is None:
            return now
        outside_allocator = max(0.0, now - torch.cuda.memory_reserved() / MB)
        return max(now, torch.cuda.max_memory_reserved() / MB + outside_allocator)

    def reset_peak(self) -> None:
        torch = _cuda_torch()
        if torch is not None:
            torch.cuda.reset_peak_memory_stats()

    def _nvml_process_mb(self) -> float | None:
        if self._nvml_failed:
            return None
        try:
            import pynvml

            if self._handle is None:
                pynvml.nvmlInit()
                self._handle = pynvml.nvmlDeviceGetHandleByIndex(self._nvml_index)
            for p in pynvml.nvmlDeviceGetComputeRunningProcesses(self._handle):
                if p.pid == os.getpid() and p.usedGpuMemory is not None:
                    return p.usedGpuMemory / MB
            return 0.0 if _cuda_torch() is None else None  # no CUDA context yet: nothing on the device
        except Exception as e:  # no driver, no pynvml, a refused query: torch's figures must do
            log.info("NVML per-process memory unavailable (%s: %s); using torch's allocator figures",
                     type(e).__name__, e)
            self._nvml_failed = True
            return None


def _cuda_torch() -> Any:
    """torch, if a model imported it and initialised CUDA; never imported here."""
    torch = sys.modules.get("torch")
    try:
        if torch is not None and torch.cuda.is_initialized():
            return torch
    except Exception:
        pass
    return None


def probe_for(device: dict[str, Any]) -> MemoryProbe:
    """The probe for a worker's device: a real GPU is measured on the GPU, anything else by RSS."""
    if device.get("kind") == "cuda" and device.get("index") is not None and not device.get("virtual"):
        return CudaMemory(int(device["index"]))
    if os.environ.get("POCKET3D_WORKER_RSS_SAMPLING") != "1" and HighWaterRss.available():
        return HighWaterRss()
    return SampledRss()


class StageMemory:
    """Per-stage peaks over one process-wide high-water mark (see the module docstring)."""

    def __init__(self, probe: MemoryProbe):
        self._probe = probe
        self._lock = threading.Lock()
        self._open: dict[int, list[float]] = {}  # stage id -> [level at start, peak so far]

    def begin(self, stage_id: int) -> None:
        with self._lock:
            self._fold()
            self._probe.reset_peak()
            level = self._probe.current_mb()
            self._open[stage_id] = [level, level]

    def end(self, stage_id: int) -> tuple[float, float]:
        """(the process's level when the stage began, its peak while the stage ran), in MB."""
        with self._lock:
            self._fold()
            level, peak = self._open.pop(stage_id)
            return level, peak

    def _fold(self) -> None:
        if self._open:
            mark = self._probe.peak_mb()
            for figures in self._open.values():
                figures[1] = max(figures[1], mark)
