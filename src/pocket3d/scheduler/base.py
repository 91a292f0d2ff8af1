"""The interface the API and the node see; :class:`pocket3d.scheduler.node.NodeScheduler` implements it."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Container, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pocket3d.jobs.records import JobRecord
from pocket3d.models.spec import Device

if TYPE_CHECKING:
    from pocket3d.scheduler.policy import PendingStage


@dataclass(frozen=True)
class Estimate:
    queue_position: int | None  # 1-based among the jobs waiting to start (queue_places), None when not waiting
    eta_seconds: float | None  # until the job finishes; None when unknown or final


Place = tuple[int, float]  # (queue position, run seconds of the stages ranked before it)


def queue_places(ordered: Iterable[PendingStage], run_seconds: Callable[[str], float],
                 under_way: Container[int]) -> tuple[dict[int, Place], Place]:
    """Each waiting stage's place in the policy's ``ordered`` queue, and the place of a stage queued after all.

    The position counts the jobs waiting to start that are ranked before it: the next stage of a job already
    under way (``under_way``: stage ids whose job ran a stage before) is in the order and its work in the seconds
    ahead, but it is not a job in the queue, so a lone queued job is #1 as the job list shows it."""
    places: dict[int, Place] = {}
    jobs_before, ahead = 0, 0.0
    for stage in ordered:
        places[stage.stage_id] = (jobs_before + 1, ahead)
        if stage.stage_id not in under_way:
            jobs_before += 1
        ahead += run_seconds(stage.model_id)
    return places, (jobs_before + 1, ahead)


@dataclass(frozen=True)
class DeviceState:
    device: Device
    resident_models: list[str]
    running_stages: list[int]
    memory_used: float = 0.0  # MB the scheduler accounts to the resident models
    budget: float = 0.0  # MB it may fill
    worker_pid: int | None = None  # the device worker process, while one runs
    loading_models: list[str] = field(default_factory=list)  # resident_models still being loaded


@dataclass(frozen=True)
class Measured:
    """What the device workers measured of one model on this node (None until a stage told)."""

    peak_mb: float | None = None  # the most one stage of it held, with the model loaded
    load_seconds: float | None = None
    run_seconds: float | None = None  # a moving average


class Scheduler(ABC):
    @abstractmethod
    def start(self) -> None: ...

    @abstractmethod
    def stop(self, timeout: float = 10.0) -> None: ...

    @abstractmethod
    def wake(self) -> None:
        """New work was queued; look for it now rather than at the next poll."""

    @abstractmethod
    def cancel(self, job_id: str) -> None:
        """The job was flagged cancelled in the store; stop its running stage soon."""

    @abstractmethod
    def estimate(self, job: JobRecord) -> Estimate: ...

    @abstractmethod
    def devices(self) -> list[DeviceState]: ...

    def measured(self, model_id: str) -> Measured:
        return Measured()

    def warming(self) -> list[str]:
        """Models still being loaded at start ("model on device"): the node is not ready until they are."""
        return []

    @abstractmethod
    def budget_of(self, device: Device) -> float:
        """MB of the device the scheduler may fill."""

    @property
    @abstractmethod
    def device_list(self) -> list[Device]:
        """The devices of this node, for the registry's "is there a device large enough" check."""


class SchedulerObserver:
    """What a scheduler reports of its work as it happens (the metrics listen). Calls come from the scheduler's
    threads and must return at once; every method does nothing here."""

    def stage_finished(self, model_id: str | None, device_id: str | None, seconds: float) -> None:
        """A stage succeeded after ``seconds`` of running; ``model_id``/``device_id`` None for the export stage."""

    def model_loaded(self, model_id: str, device_id: str, seconds: float) -> None: ...

    def model_unloaded(self, model_id: str, device_id: str, reason: str) -> None:
        """``reason``: idle, evicted (to make room), out_of_memory (after an out-of-memory error), or other."""

    def worker_restarted(self, device_id: str, cause: str) -> None:
        """``cause``: crashed (it died), killed (pocket3d killed it to stop a stage), or memory_retained (restarted
        because an unload did not give the memory back)."""
