"""Device workers: one subprocess per device holding that device's loaded model adapters.

A model that crashes, hangs or runs out of memory takes down at most its device's worker process, never the
server; the scheduler (``pocket3d.scheduler``) drives the workers through :class:`DeviceWorker` and decides what
is loaded where. ``protocol`` has the messages, ``child`` the worker process, ``memory`` how it measures itself.
"""

from pocket3d.workers.protocol import LoadResult, StageRequest, StageResult, UnloadResult
from pocket3d.workers.supervisor import DeviceWorker, WorkerStartError, WorkerUnavailable

__all__ = ["DeviceWorker", "LoadResult", "StageRequest", "StageResult", "UnloadResult", "WorkerStartError",
           "WorkerUnavailable"]
