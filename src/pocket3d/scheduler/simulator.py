"""A discrete-event simulator that drives :func:`pocket3d.scheduler.policy.plan` under simulated time.

It does what the node loop does, with the models replaced by their profiles: on every event (a job arrives,
a load ends, a stage ends, a model's idle timeout passes, or ``tick_seconds`` pass with stages waiting;
events at the same instant are taken together) it runs the idle unloads, calls
``plan`` with the waiting stages and a snapshot of every device, and applies the assignments: an eviction is
an instant unload, a load takes the model's ``load_seconds`` with its memory counted from the start, a stage
computes for its own run time (the trace's, which the policy does not know: it sees the profile's mean), and
then the job's next stage becomes pending. Loads overlap runs on a device (loading is disk and bus bound),
but a stage computes only once its model is loaded.

Compute is shared: a device with ``slots`` = k runs up to k stages at full speed; with more, all progress at
k/n of full speed (processor sharing, how a GPU time-slices kernels). ``slots`` None means no contention.

The simulator checks the policy as it goes and raises :class:`SimulationError` when an assignment would
oversubscribe a device's memory, evict a running, loading or pinned model, exceed ``max_concurrent`` or run a
model that is not loaded: the benchmark can only report figures for schedules that could really happen.

It records what the benchmark reports and plots: per-job latency by feature, loads, evictions and idle
unloads, per-device memory over time and compute-busy intervals, and the makespan.

Limits: load and run times are exact given the trace (no measurement noise, no slowdown from co-located
models beyond the processor sharing above), memory use is the profile's, and there are no failures.
"""

from __future__ import annotations

import heapq
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from pocket3d.scheduler.policy import (
    Assignment, DeviceView, ModelProfile, PendingStage, ResidentModel, SchedulingPolicy, UsageStats, evictable,
    idle_unloads, plan)

_EPS = 1e-9


class SimulationError(RuntimeError):
    """The policy asked for something the mechanism could not do."""


@dataclass(frozen=True)
class SimDevice:
    id: str
    kind: str
    budget_mb: float
    slots: int | None = 1


@dataclass(frozen=True)
class SimStage:
    model_id: str
    run_seconds: float  # what this stage really takes (the policy sees only the profile's mean)


@dataclass(frozen=True)
class SimJob:
    id: str
    feature: str
    stages: tuple[SimStage, ...]
    submitted_at: float = 0.0
    priority: int = 0
    kind: str = ""  # the pipeline it was drawn from, for reports


@dataclass
class StageRecord:
    stage_id: int
    job_id: str
    model_id: str
    ready_at: float
    device_id: str | None = None
    assigned_at: float | None = None
    compute_start: float | None = None
    end: float | None = None
    loaded: bool = False  # its assignment loaded the model


@dataclass
class SimResult:
    policy: str
    devices: list[SimDevice]
    jobs: dict[str, SimJob]
    finished: dict[str, float]  # job id -> completion time
    stages: list[StageRecord]
    memory: dict[str, list[tuple[float, float]]]  # device id -> (time, MB in use) at every change
    busy: dict[str, list[tuple[float, float]]]  # device id -> intervals with at least one stage computing
    loading: dict[str, list[tuple[float, float]]]  # device id -> intervals with a load in flight
    loads: int
    evictions: int
    idle_unloads: int
    plan_calls: int
    start: float
    end: float

    @property
    def makespan(self) -> float:
        return self.end - self.start

    def latencies(self, feature: str | None = None) -> list[float]:
        return sorted(self.finished[j] - job.submitted_at for j, job in self.jobs.items()
                      if j in self.finished and (feature is None or job.feature == feature))

    def busy_seconds(self, device_id: str) -> float:
        return sum(b - a for a, b in self.busy[device_id])

    def busy_share(self, kind: str | None = None) -> float:
        devices = [d for d in self.devices if kind is None or d.kind == kind]
        if not devices or self.makespan <= 0:
            return 0.0
        return sum(self.busy_seconds(d.id) for d in devices) / (len(devices) * self.makespan)

    def loading_share(self, kind: str | None = None) -> float:
        """Share of device time with a load in flight (one load at a time per device)."""
        devices = [d for d in self.devices if kind is None or d.kind == kind]
        if not devices or self.makespan <= 0:
            return 0.0
        return sum(min(b, self.end) - a for d in devices for a, b in self.loading[d.id]) / (len(devices) * self.makespan)


@dataclass
class _Resident:
    model_id: str
    memory_mb: float
    loading: bool
    loaded_at: float
    last_used: float
    stages: list[int] = field(default_factory=list)  # on this device: computing, or waiting for the load


@dataclass
class _DeviceState:
    spec: SimDevice
    resident: dict[str, _Resident] = field(default_factory=dict)
    computing: dict[int, float] = field(default_factory=dict)  # stage id -> work left (seconds at full speed)
    started: dict[int, float] = field(default_factory=dict)  # stage id -> compute start
    progressed_at: float = 0.0
    version: int = 0
    busy_since: float | None = None

    @property
    def used_mb(self) -> float:
        return sum(r.memory_mb for r in self.resident.values())

    def speed(self) -> float:
        n = len(self.computing)
        if n == 0 or self.spec.slots is None:
            return 1.0
        return min(1.0, self.spec.slots / n)


class Simulator:
    """Runs jobs through a policy on simulated devices; one :meth:`run` per instance."""

    def __init__(self, devices: Sequence[SimDevice], models: Mapping[str, ModelProfile], policy: SchedulingPolicy,
                 *, idle_timeout: float | None = None, stats: UsageStats | None = None, tick_seconds: float = 10.0):
        self.models = dict(models)
        self.tick_seconds = tick_seconds
        self.policy = policy
        self.idle_timeout = idle_timeout if policy.unload_idle else None
        self.stats = stats or UsageStats()
        self.devices = {d.id: _DeviceState(d) for d in devices}
        self._events: list[tuple[float, int, str, tuple]] = []
        self._seq = 0
        self._pending: dict[int, PendingStage] = {}
        self._records: list[StageRecord] = []
        self._job_of: dict[int, tuple[SimJob, int]] = {}
        self._running_by_model: dict[str, int] = defaultdict(int)
        self._finished: dict[str, float] = {}
        self._memory: dict[str, list[tuple[float, float]]] = {d.id: [(0.0, 0.0)] for d in devices}
        self._busy: dict[str, list[tuple[float, float]]] = {d.id: [] for d in devices}
        self._loading: dict[str, list[tuple[float, float]]] = {d.id: [] for d in devices}
        self._next_idle_check: float | None = None
        self.loads = self.evictions = self.idle_unload_count = self.plan_calls = 0
        self.now = 0.0

    # -- public ---------------------------------------------------------------------------------------------

    def run(self, jobs: Sequence[SimJob]) -> SimResult:
        jobs = sorted(jobs, key=lambda j: (j.submitted_at, j.id))
        for job in jobs:
            unknown = [s.model_id for s in job.stages if s.model_id not in self.models]
            if unknown or not job.stages:
                raise SimulationError(f"job {job.id}: no stages or unknown models {unknown}")
            self._push(job.submitted_at, "arrive", (job,))
        start = jobs[0].submitted_at if jobs else 0.0
        self.now = start
        for d in self.devices.values():
            d.progressed_at = start
            self._memory[d.spec.id] = [(start, 0.0)]
        total = len(jobs)
        while self._events and len(self._finished) < total:
            t = self._events[0][0]
            self.now = t
            while self._events and self._events[0][0] <= t + _EPS:
                _, _, kind, payload = heapq.heappop(self._events)
                getattr(self, f"_on_{kind}")(*payload)
            if len(self._finished) == total:
                break
            self._unload_idle()
            self._plan()
            self._schedule_idle_check()
            self._schedule_tick()
        if len(self._finished) < total:
            stuck = sorted(self._pending.values(), key=lambda s: s.stage_id)[:5]
            raise SimulationError(f"{self.policy.name}: {total - len(self._finished)} job(s) never finished; "
                                  f"waiting stages include {[(s.job_id, s.model_id) for s in stuck]}")
        for d in self.devices.values():
            self._record_memory(d)
        end = max(self._finished.values(), default=start)
        return SimResult(self.policy.name, [d.spec for d in self.devices.values()], {j.id: j for j in jobs},
                         dict(self._finished), self._records, self._memory, self._busy, self._loading, self.loads,
                         self.evictions,
                         self.idle_unload_count, self.plan_calls, start, end)

    def views(self) -> list[DeviceView]:
        out = []
        for d in self.devices.values():
            resident = {}
            for m, r in d.resident.items():
                since = tuple(d.started[s] for s in r.stages if s in d.started)
                resident[m] = ResidentModel(m, r.memory_mb, running=len(r.stages), last_used=r.last_used,
                                            loaded_at=r.loaded_at, loading=r.loading, running_since=since)
            out.append(DeviceView(d.spec.id, d.spec.kind, d.spec.budget_mb, resident, slots=d.spec.slots))
        return out

    # -- events ---------------------------------------------------------------------------------------------

    def _push(self, t: float, kind: str, payload: tuple) -> None:
        self._seq += 1
        heapq.heappush(self._events, (t, self._seq, kind, payload))

    def _on_arrive(self, job: SimJob) -> None:
        self._make_pending(job, 0)

    def _on_loaded(self, device_id: str, model_id: str) -> None:
        d = self.devices[device_id]
        r = d.resident[model_id]
        r.loading = False
        r.loaded_at = r.last_used = self.now
        self._progress(d)
        for stage_id in r.stages:
            self._start_compute(d, stage_id)
        self._reschedule(d)

    def _on_computed(self, device_id: str, stage_id: int, version: int) -> None:
        d = self.devices[device_id]
        if version != d.version or stage_id not in d.computing:
            return
        self._progress(d)
        done = [s for s, left in d.computing.items() if left <= 1e-6 or s == stage_id]
        for s in done:
            self._finish_stage(d, s)
        self._reschedule(d)

    def _on_idle_check(self) -> None:
        self._next_idle_check = None

    def _on_tick(self) -> None:
        pass  # only for the plan() call that follows every event

    # -- stages ---------------------------------------------------------------------------------------------

    def _make_pending(self, job: SimJob, index: int) -> None:
        stage_id = len(self._records) + 1
        stage = job.stages[index]
        self._records.append(StageRecord(stage_id, job.id, stage.model_id, ready_at=self.now))
        self._job_of[stage_id] = (job, index)
        self._pending[stage_id] = PendingStage(stage_id, job.id, stage.model_id, job.feature, job.priority,
                                               job.submitted_at, ready_at=self.now,
                                               later=tuple(s.model_id for s in job.stages[index + 1:]))
        self.stats.record_request(stage.model_id, self.now)

    def _start_compute(self, d: _DeviceState, stage_id: int) -> None:
        job, index = self._job_of[stage_id]
        d.computing[stage_id] = job.stages[index].run_seconds
        d.started[stage_id] = self.now
        self._records[stage_id - 1].compute_start = self.now
        if d.busy_since is None:
            d.busy_since = self.now

    def _finish_stage(self, d: _DeviceState, stage_id: int) -> None:
        job, index = self._job_of[stage_id]
        model_id = job.stages[index].model_id
        del d.computing[stage_id]
        del d.started[stage_id]
        r = d.resident[model_id]
        r.stages.remove(stage_id)
        r.last_used = self.now
        self._running_by_model[model_id] -= 1
        self._records[stage_id - 1].end = self.now
        if not d.computing and d.busy_since is not None:
            self._busy[d.spec.id].append((d.busy_since, self.now))
            d.busy_since = None
        if index + 1 < len(job.stages):
            self._make_pending(job, index + 1)
        else:
            self._finished[job.id] = self.now

    def _progress(self, d: _DeviceState) -> None:
        elapsed = self.now - d.progressed_at
        if elapsed > 0 and d.computing:
            speed = d.speed()
            for s in d.computing:
                d.computing[s] -= elapsed * speed
        d.progressed_at = self.now

    def _reschedule(self, d: _DeviceState) -> None:
        d.version += 1
        speed = d.speed()
        for s, left in d.computing.items():
            self._push(self.now + max(0.0, left) / speed, "computed", (d.spec.id, s, d.version))

    # -- the mechanism around plan() ------------------------------------------------------------------------

    def _plan(self) -> None:
        if not self._pending:
            return
        self.plan_calls += 1
        assignments = plan(list(self._pending.values()), self.views(), self.models, self.stats, self.now,
                           self.policy)
        for a in assignments:
            self._apply(a)

    def _apply(self, a: Assignment) -> None:
        stage = a.stage
        if stage.stage_id not in self._pending:
            raise SimulationError(f"stage {stage.stage_id} assigned twice")
        d = self.devices.get(a.device_id)
        if d is None:
            raise SimulationError(f"no device {a.device_id}")
        profile = self.models[stage.model_id]
        if d.spec.kind not in profile.device_kinds:
            raise SimulationError(f"{profile.id} placed on a {d.spec.kind} device")
        self._progress(d)
        for victim in a.evict:
            r = d.resident.get(victim)
            view = ResidentModel(victim, r.memory_mb, len(r.stages), r.last_used, r.loaded_at, r.loading) if r else None
            if view is None or not evictable(view, self.models):
                raise SimulationError(f"{self.policy.name} evicted {victim} on {d.spec.id}, which is not idle")
            del d.resident[victim]
            self.evictions += 1
        record = self._records[stage.stage_id - 1]
        record.device_id, record.assigned_at = d.spec.id, self.now
        r = d.resident.get(profile.id)
        if a.load:
            if r is not None:
                raise SimulationError(f"{profile.id} loaded twice on {d.spec.id}")
            if d.used_mb + profile.memory_mb > d.spec.budget_mb + 1e-6:
                raise SimulationError(f"{self.policy.name} oversubscribed {d.spec.id}: {d.used_mb:.0f} + "
                                      f"{profile.memory_mb:.0f} MB > {d.spec.budget_mb:.0f} MB")
            d.resident[profile.id] = _Resident(profile.id, profile.memory_mb, loading=True, loaded_at=self.now,
                                               last_used=self.now, stages=[stage.stage_id])
            record.loaded = True
            self.loads += 1
            self._loading[d.spec.id].append((self.now, self.now + profile.load_seconds))
            self._push(self.now + profile.load_seconds, "loaded", (d.spec.id, profile.id))
        else:
            if r is None or r.loading:
                raise SimulationError(f"{profile.id} run on {d.spec.id} where it is not loaded")
            if len(r.stages) >= profile.max_concurrent:
                raise SimulationError(f"{profile.id} on {d.spec.id}: more than max_concurrent="
                                      f"{profile.max_concurrent} stage(s) on one copy")
            r.stages.append(stage.stage_id)
            self._start_compute(d, stage.stage_id)
        self._running_by_model[profile.id] += 1
        del self._pending[stage.stage_id]
        self._record_memory(d)
        self._reschedule(d)

    def _unload_idle(self) -> None:
        if self.idle_timeout is None:
            return
        for device_id, model_id in idle_unloads(self.views(), self.models, self.now, self.idle_timeout):
            d = self.devices[device_id]
            del d.resident[model_id]
            self.idle_unload_count += 1
            self._record_memory(d)

    def _schedule_idle_check(self) -> None:
        if self.idle_timeout is None:
            return
        due = [r.last_used + self.idle_timeout for d in self.devices.values() for r in d.resident.values()
               if not r.stages and not r.loading and not self.models[r.model_id].pinned]
        if not due:
            return
        at = max(min(due), self.now + _EPS * 10)
        if self._next_idle_check is None or at < self._next_idle_check - _EPS:
            self._next_idle_check = at
            self._push(at, "idle_check", ())

    def _schedule_tick(self) -> None:
        """The node loop also plans every few seconds, not only on events: ageing and starvation change
        decisions as time passes, even when nothing else happens."""
        if self._pending and (not self._events or self._events[0][0] > self.now + self.tick_seconds):
            self._push(self.now + self.tick_seconds, "tick", ())

    def _record_memory(self, d: _DeviceState) -> None:
        series = self._memory[d.spec.id]
        used = d.used_mb
        if series and series[-1][1] == used:
            return
        series.append((self.now, used))
