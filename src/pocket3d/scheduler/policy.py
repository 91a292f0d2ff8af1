"""Scheduling policy: which waiting stages start now, on which device, after which evictions.

Everything here is a pure function of its inputs (pending stages, device snapshots, model profiles, demand
statistics and ``now``): no processes, no devices, no clock of its own. The node loop and the discrete-event
simulator (:mod:`pocket3d.scheduler.simulator`) call the same :func:`plan`, so what the benchmark measures is
the code that runs.

:func:`plan` is the mechanism-independent frame. It ranks the pending stages (an :class:`OrderingPolicy`),
asks a :class:`PlacementPolicy` for a place for each in rank order, and applies each accepted assignment to a
working copy of the devices so that two assignments of one call never promise the same memory or compute
slot. It enforces the invariants whatever the placement policy says: ``max_concurrent`` stages per loaded copy
(a model may have a copy on every device: replicas), a device's budget after the evictions listed, no
eviction of a model that is running, loading or pinned, one copy of a model per device. An assignment that
breaks one is refused and logged (a policy bug, never a crash of the node loop).

The pocket3d policy (:func:`pocket3d_policy`):

* **Order** (:class:`RemainingWorkOrdering`): feature weight x 2^(priority/5) x (1 + age/ageing_seconds) /
  the job's expected remaining run seconds (this stage and every later one, from the measured means), age
  counted from the job's submission. The job closest to done goes first (shortest remaining work keeps the
  fewest jobs waiting); a priority step of 5 doubles a claim; ageing grows it linearly. A stage that has
  waited ``max_wait`` since it became ready goes ahead of every other, the longest wait first.
* **Place**, in rank order, taking the first option that exists:
  1. *run now* on a device where the model is loaded and a compute slot is free (a slot may also be used
     while a load is in flight there when the stage is expected to end before that load does: backfill);
  2. *wait* for a copy that is resident already when it is expected to come free within the model's load
     time (the expected wait queues this call's earlier waiters of the same model on its copies);
  3. *load* a copy on a device with no load in flight whose compute is free by the time the load ends (loads
     overlap runs: they are disk and bus bound), evicting only models with no waiting stage: a device
     finishes its batch (the stages queued for what it holds) before it switches. A load is skipped when a
     resident copy comes free before the load plus the reloads its evictions cause later would have paid
     back (``switch_factor`` x that), and on a device that has waiting work of its own when that work, per
     copy, exceeds this model's waiting work per copy after the load: a device is switched to another model
     only to balance backlogs, which is what keeps a backlog from churning the memory and what adds a replica
     of a model whose queue dominates. Among the devices left, prefer one without work of its own, then the
     least reload cost destroyed, then the tightest fit, which keeps the large devices open for the large
     models.
  The best-ranked stage of a model resident nowhere, once it has waited ``max_wait`` since it became ready,
  may also evict models with waiting stages, except a batch loaded less than ``min_batch`` of its load times
  ago (so old stages of several models cannot switch a device after every stage); if no device can take it
  even so, it *reserves* one that could hold it once its running stages end and no protected batch is in the
  way: no other stage starts there until the stage is placed. Without this a large model starves behind a
  stream of small ones that always hold part of the memory. The bound holds while the node keeps up with what
  arrives; under overload no order can keep every stage within it.
* **Evict** the resident models with the lowest ``load_seconds x expected reuse / memory_mb`` first, where
  expected reuse is waiting stages plus the decayed request rate over a horizon, shared among the model's
  copies: a model slow to load and often asked for stays; plain LRU would evict it first when it was used
  longest ago.

Baselines for the benchmark: :func:`serial_fifo_policy` (one stage in flight on the node, on the largest
device, FIFO, LRU eviction: the seed design's queue loop), :func:`static_pinning_policy` (each model fixed up
front to one device, FIFO per device, nothing evicted: the ProtoScale seed), :func:`shortest_remaining_work_policy`
(the size-aware order without weights, priorities or bound, on the same placement) and :func:`fifo_floor_policy`
(FIFO on any free device; with memory and loads taken away by the benchmark, the floor no placement beats).

Limits: estimates are means (``run_seconds``, ``load_seconds``); a device's compute is modelled as ``slots``
stages at once (GPU: one, the stages are compute bound); memory of several concurrent stages in one loaded
copy is taken to be the copy's ``memory_mb``; nothing is loaded ahead of a stage that is not yet runnable.
"""

from __future__ import annotations

import heapq
import logging
import math
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

log = logging.getLogger(__name__)

_EPS_MB = 1e-6


# -- the data the policy sees -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelProfile:
    """What the scheduler knows of one model."""

    id: str
    memory_mb: float  # estimate while loaded and running: vram_requirement, corrected by measured peaks
    load_seconds: float  # estimate (measured loads, else a default)
    run_seconds: float  # mean run time estimate of one stage
    max_concurrent: int = 1  # stages one loaded copy runs at once (the adapter's word); copies: one per device
    pinned: bool = False  # never evicted
    device_kinds: tuple[str, ...] = ("cuda",)  # device kinds it can run on: "cuda", "cpu"

    def room_in(self, resident: ResidentModel) -> bool:
        """Whether the loaded copy can take one more stage now."""
        return resident.running < self.max_concurrent


@dataclass(frozen=True)
class ResidentModel:
    """A model loaded (or being loaded) on a device."""

    model_id: str
    memory_mb: float
    running: int  # stages of it on this device now; while loading, the stage waiting for the load
    last_used: float  # time its last stage ended (or it was loaded)
    loaded_at: float  # while loading: when the load began
    loading: bool = False  # the load is in flight (its memory is already counted)
    running_since: tuple[float, ...] = ()  # start times of its stages computing now (for remaining-time guesses)

    @property
    def computing(self) -> int:
        return 0 if self.loading else self.running


@dataclass(frozen=True)
class DeviceView:
    """A snapshot of one device for the policy."""

    id: str
    kind: str  # "cuda" or "cpu"
    budget_mb: float  # memory the scheduler may use: total * max_utilization - memory_buffer
    resident: Mapping[str, ResidentModel]
    reserved_mb: float = 0.0  # memory promised to something the resident map does not show
    slots: int | None = None  # stages computing at once (GPU: 1, they are compute bound); None: no limit

    @property
    def used_mb(self) -> float:
        return sum(r.memory_mb for r in self.resident.values()) + self.reserved_mb

    @property
    def free_mb(self) -> float:
        return self.budget_mb - self.used_mb

    @property
    def computing(self) -> int:
        return sum(r.computing for r in self.resident.values())

    @property
    def loading(self) -> list[ResidentModel]:
        return [r for r in self.resident.values() if r.loading]


@dataclass(frozen=True)
class PendingStage:
    stage_id: int
    job_id: str
    model_id: str
    feature: str  # Feature value, for priority weights
    priority: int  # per-request, -10..10
    submitted_at: float  # when the job was submitted (ageing counts from here)
    ready_at: float | None = None  # when this stage became runnable (starvation counts from here)
    later: tuple[str, ...] = ()  # model ids of the job's stages after this one (for the size-aware order)

    @property
    def ready(self) -> float:
        return self.submitted_at if self.ready_at is None else self.ready_at

    def remaining_seconds(self, models: Mapping[str, ModelProfile]) -> float:
        """Expected run seconds of this stage and every later one of its job (unknown models count zero)."""
        return sum(_run_seconds(models, m) for m in (self.model_id, *self.later))


@dataclass(frozen=True)
class Assignment:
    stage: PendingStage
    device_id: str
    evict: tuple[str, ...]  # model ids to unload on that device first (in order)
    load: bool  # the model must be loaded (not resident there)


class UsageStats:
    """Demand history: an exponentially decayed count of requests per model.

    The mechanism calls :meth:`record_request` when a stage becomes pending. ``rate`` is requests per second
    with a half-life of ``half_life`` seconds, so a burst an hour ago weighs little and a steady stream
    reads as its rate.
    """

    def __init__(self, half_life: float = 600.0):
        self.half_life = half_life
        self._tau = half_life / math.log(2)
        self._level: dict[str, tuple[float, float]] = {}  # model id -> (decayed count, at time)

    def record_request(self, model_id: str, now: float) -> None:
        level, at = self._level.get(model_id, (0.0, now))
        self._level[model_id] = (level * math.exp(-max(0.0, now - at) / self._tau) + 1.0, now)

    def rate(self, model_id: str, now: float) -> float:
        level, at = self._level.get(model_id, (0.0, now))
        return level * math.exp(-max(0.0, now - at) / self._tau) / self._tau


@dataclass
class PlanContext:
    """What :func:`plan` tells a placement policy about the call in progress (policies may ignore it)."""

    ranked: Sequence[PendingStage]  # this call's pending stages, best first
    pending_by_model: Mapping[str, int]  # waiting stages per model (all of this call's pending)
    position: int = 0  # index in ``ranked`` of the stage being placed
    reserved: dict[str, int] = field(default_factory=dict)  # device id -> stage id it is held for
    version: int = 0  # bumped each time an assignment is applied to the working copy
    done: bool = False  # set by a placement policy when no further stage can be placed in this call
    running: Mapping[str, int] = field(default_factory=dict)  # stages running per model, this call's included
    scratch: dict = field(default_factory=dict)  # a policy's own per-call memo


# -- the three policy parts ---------------------------------------------------------------------------------


class OrderingPolicy(ABC):
    @abstractmethod
    def order(self, pending: Sequence[PendingStage], now: float,
              models: Mapping[str, ModelProfile] | None = None) -> list[PendingStage]:
        """Best first. ``models`` gives the expected run times a size-aware order needs."""

    def sort_key(self, now: float, models: Mapping[str, ModelProfile]) -> Callable[[PendingStage], Any] | None:
        """A key that sorts stages as :meth:`order` does at ``now``, for merging a few new stages into an ordering
        made a moment ago (the node's long-queue rounds); None when the order is not a sort by a key."""
        return None


class EvictionPolicy(ABC):
    @abstractmethod
    def victims(self, device: DeviceView, need_mb: float, models: Mapping[str, ModelProfile], stats: UsageStats,
                now: float, pending: Mapping[str, int] | None = None) -> list[str] | None:
        """Models to unload on ``device`` to free ``need_mb`` more; None when that cannot be done."""


class PlacementPolicy(ABC):
    @abstractmethod
    def place(self, stage: PendingStage, model: ModelProfile, devices: Sequence[DeviceView],
              models: Mapping[str, ModelProfile], stats: UsageStats, now: float,
              context: PlanContext | None = None) -> Assignment | None: ...

    def prepare(self, devices: Sequence[DeviceView], models: Mapping[str, ModelProfile], stats: UsageStats,
                now: float, context: PlanContext) -> None:
        """Called once per plan() call before any stage is placed (e.g. to reserve a device)."""


@dataclass
class SchedulingPolicy:
    name: str
    ordering: OrderingPolicy
    placement: PlacementPolicy
    eviction: EvictionPolicy
    unload_idle: bool = True  # the mechanism applies idle_unloads (the static-pinning baseline never unloads)


def evictable(resident: ResidentModel, models: Mapping[str, ModelProfile]) -> bool:
    profile = models.get(resident.model_id)
    return resident.running == 0 and not resident.loading and not (profile is not None and profile.pinned)


# -- ordering -----------------------------------------------------------------------------------------------


class FifoOrdering(OrderingPolicy):
    def order(self, pending: Sequence[PendingStage], now: float,
              models: Mapping[str, ModelProfile] | None = None) -> list[PendingStage]:
        return sorted(pending, key=self.sort_key(now, models or {}))

    def sort_key(self, now: float, models: Mapping[str, ModelProfile]) -> Callable[[PendingStage], Any]:
        return lambda s: (s.submitted_at, s.stage_id)


class RemainingWorkOrdering(OrderingPolicy):
    """Size-aware: weight x 2^(priority/5) x (1 + age/ageing_seconds) / the job's expected remaining seconds.

    A job close to done goes first (shortest remaining work minimises the mean time in the system); a
    priority step of 5 doubles a stage's claim, the feature weight scales it, and ageing grows it linearly
    with the time since submission. A stage that has waited ``urgent_after`` seconds since it became ready
    goes ahead of every other, the longest-waiting first: that, with the placement's reservation, bounds the
    wait whatever the sizes and priorities of what keeps arriving. ``weights=None`` ignores features and
    priorities (the plain shortest-remaining-work baseline)."""

    def __init__(self, priority_weights: Mapping[str, float] | None, ageing_seconds: float = 120.0,
                 urgent_after: float | None = None, default_weight: float = 1.0, min_seconds: float = 1.0):
        self.weights = None if priority_weights is None else dict(priority_weights)
        self.ageing_seconds = ageing_seconds
        self.urgent_after = urgent_after
        self.default_weight = default_weight
        self.min_seconds = min_seconds

    def score(self, stage: PendingStage, now: float, models: Mapping[str, ModelProfile]) -> float:
        claim = self._claim(stage)
        age = max(0.0, now - stage.submitted_at)
        return claim * (1.0 + age / self.ageing_seconds) / max(self.min_seconds, stage.remaining_seconds(models))

    def urgent(self, stage: PendingStage, now: float) -> bool:
        return self.urgent_after is not None and now - stage.ready >= self.urgent_after

    def order(self, pending: Sequence[PendingStage], now: float,
              models: Mapping[str, ModelProfile] | None = None) -> list[PendingStage]:
        return sorted(pending, key=self.sort_key(now, models or {}))

    def sort_key(self, now: float, models: Mapping[str, ModelProfile]) -> Callable[[PendingStage], Any]:
        """Urgent stages first, the longest-waiting first; then by score, best first. The score's two factors
        that do not change with time (the claim, the remaining seconds) are the same for every stage of a
        feature, priority and model chain, so they are worked out once per such class: a burst's queue of
        thousands holds a handful of classes. The arithmetic is :meth:`score`'s, in its order, so both agree to
        the last bit."""
        claims: dict[tuple[str, int], float] = {}
        remaining: dict[tuple[str, tuple[str, ...]], float] = {}
        urgent_after, ageing = self.urgent_after, self.ageing_seconds

        def key(s: PendingStage) -> tuple:
            if urgent_after is not None and now - s.ready >= urgent_after:
                return (0, s.ready, s.stage_id)
            claim = claims.get((s.feature, s.priority))
            if claim is None:
                claim = claims[(s.feature, s.priority)] = self._claim(s)
            seconds = remaining.get((s.model_id, s.later))
            if seconds is None:
                seconds = remaining[(s.model_id, s.later)] = max(self.min_seconds, s.remaining_seconds(models))
            age = max(0.0, now - s.submitted_at)
            return (1, -(claim * (1.0 + age / ageing) / seconds), s.submitted_at, s.stage_id)

        return key

    def _claim(self, stage: PendingStage) -> float:
        if self.weights is None:
            return 1.0
        return self.weights.get(stage.feature, self.default_weight) * 2.0 ** (max(-10, min(10, stage.priority)) / 5.0)


# -- eviction -----------------------------------------------------------------------------------------------


class LruEviction(EvictionPolicy):
    """Least recently used first (the baselines, and the comparison in the tests)."""

    def victims(self, device: DeviceView, need_mb: float, models: Mapping[str, ModelProfile], stats: UsageStats,
                now: float, pending: Mapping[str, int] | None = None) -> list[str] | None:
        candidates = sorted((r for r in device.resident.values() if evictable(r, models)),
                            key=lambda r: (r.last_used, r.model_id))
        return _take_until(candidates, need_mb)


class ReloadCostEviction(EvictionPolicy):
    """Lowest ``load_seconds x expected reuse / memory_mb`` first: what it would cost to need it back, per MB.

    Expected reuse of a model = (its waiting stages + rate x horizon) / its instances on the node, so a
    replica is cheaper to drop than the last copy. ``only_idle_demand`` restricts victims to models with no
    waiting stage (the normal case: a device finishes its batch before it switches); a starving stage lifts
    that, but not for a model loaded less than ``min_batch`` of its load times ago with stages still waiting:
    a batch that paid a load runs long enough to pay it back, so that old stages of several models cannot
    take turns switching a device after every stage.
    """

    def __init__(self, horizon: float = 300.0, min_batch: float = 10.0):
        self.horizon = horizon
        self.min_batch = min_batch

    def protected(self, resident: ResidentModel, models: Mapping[str, ModelProfile], now: float,
                  pending: Mapping[str, int] | None) -> bool:
        """A batch that must not be cut short: stages of it wait, and it was loaded less than min_batch loads ago."""
        profile = models.get(resident.model_id)
        return (profile is not None and bool((pending or {}).get(resident.model_id))
                and now - resident.loaded_at < self.min_batch * profile.load_seconds)

    def keep_value(self, resident: ResidentModel, models: Mapping[str, ModelProfile], stats: UsageStats, now: float,
                   pending: Mapping[str, int] | None, instances: int = 1) -> float:
        profile = models.get(resident.model_id)
        load = profile.load_seconds if profile else 0.0
        demand = (pending or {}).get(resident.model_id, 0) + stats.rate(resident.model_id, now) * self.horizon
        return load * demand / max(1, instances) / max(resident.memory_mb, 1.0)

    def victims(self, device: DeviceView, need_mb: float, models: Mapping[str, ModelProfile], stats: UsageStats,
                now: float, pending: Mapping[str, int] | None = None, *, only_idle_demand: bool = False,
                instances: Mapping[str, int] | None = None) -> list[str] | None:
        candidates = [r for r in device.resident.values() if evictable(r, models)]
        if only_idle_demand and pending is not None:
            candidates = [r for r in candidates if not pending.get(r.model_id)]
        else:
            candidates = [r for r in candidates if not self.protected(r, models, now, pending)]
        inst = instances or {}
        candidates.sort(key=lambda r: (self.keep_value(r, models, stats, now, pending, inst.get(r.model_id, 1)),
                                       r.last_used, r.model_id))
        return _take_until(candidates, need_mb)


def _take_until(candidates: Sequence[ResidentModel], need_mb: float) -> list[str] | None:
    """The shortest prefix of ``candidates`` freeing ``need_mb``, then without any member not needed after all."""
    if need_mb <= _EPS_MB:
        return []
    chosen: list[ResidentModel] = []
    freed = 0.0
    for r in candidates:
        if freed >= need_mb - _EPS_MB:
            break
        chosen.append(r)
        freed += r.memory_mb
    if freed < need_mb - _EPS_MB:
        return None
    # A large model taken last may make earlier small ones unnecessary: give those back, most valuable first.
    for r in reversed(chosen[:-1]):
        if freed - r.memory_mb >= need_mb - _EPS_MB:
            chosen.remove(r)
            freed -= r.memory_mb
    return [r.model_id for r in chosen]


# -- device timing guesses ----------------------------------------------------------------------------------


def _run_seconds(models: Mapping[str, ModelProfile], model_id: str) -> float:
    p = models.get(model_id)
    return p.run_seconds if p else 0.0


def _load_done_at(r: ResidentModel, models: Mapping[str, ModelProfile]) -> float:
    p = models.get(r.model_id)
    return r.loaded_at + (p.load_seconds if p else 0.0)


def _compute_ends(device: DeviceView, models: Mapping[str, ModelProfile], now: float) -> list[float]:
    """Expected end of every stage computing on the device; an overrunning stage is guessed to end soon."""
    ends = []
    for r in device.resident.values():
        if r.loading or r.running == 0:
            continue
        run = _run_seconds(models, r.model_id)
        starts = list(r.running_since[: r.running])
        starts += [now - run / 2] * (r.running - len(starts))
        ends += [max(s + run, now + 0.1 * run) for s in starts]
    return sorted(ends)


def compute_free_at(device: DeviceView, models: Mapping[str, ModelProfile], now: float) -> float:
    """When a compute slot is expected to be free, counting the stages that wait for a load in flight."""
    if device.slots is None:
        return now
    ends = _compute_ends(device, models, now)
    for r in device.loading:
        if r.running:  # a load ahead of any stage (a preload) keeps no compute slot
            ends.append(max(_load_done_at(r, models), now) + _run_seconds(models, r.model_id))
    ends.sort()
    if len(ends) < device.slots:
        return now
    return ends[len(ends) - device.slots]


# -- the decision step --------------------------------------------------------------------------------------


class _Working:
    """Device views that assignments of this call are applied to as they are made."""

    def __init__(self, devices: Sequence[DeviceView]):
        self.views = list(devices)
        self.index = {d.id: i for i, d in enumerate(self.views)}

    def get(self, device_id: str) -> DeviceView | None:
        i = self.index.get(device_id)
        return None if i is None else self.views[i]

    def apply(self, a: Assignment, profile: ModelProfile, now: float) -> None:
        d = self.views[self.index[a.device_id]]
        resident = {k: v for k, v in d.resident.items() if k not in a.evict}
        if a.load:
            resident[profile.id] = ResidentModel(profile.id, profile.memory_mb, running=1, last_used=now,
                                                 loaded_at=now, loading=True)
        else:
            r = resident[profile.id]
            resident[profile.id] = replace(r, running=r.running + 1, running_since=r.running_since + (now,))
        self.views[self.index[a.device_id]] = replace(d, resident=resident)


def _check(a: Assignment, profile: ModelProfile, work: _Working, models: Mapping[str, ModelProfile]) -> str | None:
    """Why the assignment breaks an invariant of :func:`plan`, or None."""
    d = work.get(a.device_id)
    if d is None:
        return f"no device {a.device_id}"
    if d.kind not in profile.device_kinds:
        return f"{profile.id} does not run on {d.kind}"
    for victim in a.evict:
        r = d.resident.get(victim)
        if r is None:
            return f"evicts {victim}, which is not resident on {d.id}"
        if not evictable(r, models):
            return f"evicts {victim}, which is running, loading or pinned"
    present = d.resident.get(profile.id)
    if a.load:
        if present is not None and profile.id not in a.evict:
            return f"loads {profile.id} on {d.id}, where it is already resident"
        freed = sum(d.resident[v].memory_mb for v in a.evict)
        if d.used_mb - freed + profile.memory_mb > d.budget_mb + _EPS_MB:
            return (f"{profile.id} ({profile.memory_mb:.0f} MB) does not fit on {d.id}: "
                    f"{d.used_mb - freed:.0f} of {d.budget_mb:.0f} MB in use after evictions")
    elif present is None or present.loading:
        return f"runs {profile.id} on {d.id} without loading it, but it is not loaded there"
    elif not profile.room_in(present):
        return f"runs a stage of {profile.id} on {d.id} beyond its max_concurrent={profile.max_concurrent} per copy"
    return None


def plan(pending: Sequence[PendingStage], devices: Sequence[DeviceView], models: Mapping[str, ModelProfile],
         stats: UsageStats, now: float, policy: SchedulingPolicy,
         ranked: Sequence[PendingStage] | None = None,
         pending_by_model: Mapping[str, int] | None = None) -> list[Assignment]:
    """The one decision step both the real node loop and the simulator call: which waiting stages start now,
    where, after which evictions. Respects max_concurrent per model (counting running ones on all devices),
    never oversubscribes a device's budget (after the evictions it lists), never evicts a model with running
    stages or a pinned one, and applies its own assignments to a working copy of the device views as it goes,
    so two assignments in one call don't promise the same memory."""
    work = _Working(devices)
    running = Counter()
    for d in devices:
        for r in d.resident.values():
            running[r.model_id] += r.running
    if ranked is None:  # a caller that ranked them already (for queue positions) passes its ranking
        ranked = policy.ordering.order(pending, now, models)
    if pending_by_model is None:  # a caller that keeps the counts up to date passes them
        pending_by_model = Counter(s.model_id for s in pending)
    context = PlanContext(ranked=ranked, pending_by_model=pending_by_model, running=running)
    policy.placement.prepare(devices, models, stats, now, context)
    out: list[Assignment] = []
    for i, stage in enumerate(ranked):
        if context.done:
            break
        profile = models.get(stage.model_id)
        if profile is None:
            continue
        context.position = i
        a = policy.placement.place(stage, profile, work.views, models, stats, now, context=context)
        if a is None:
            continue
        problem = _check(a, profile, work, models)
        if problem:
            log.error("policy %s: refused assignment of stage %s: %s", policy.name, stage.stage_id, problem)
            continue
        work.apply(a, profile, now)
        running[stage.model_id] += 1
        context.version += 1
        out.append(a)
    return out


def preload_placement(wanted: Sequence[ModelProfile], devices: Sequence[DeviceView]) -> list[tuple[str, str]]:
    """(device id, model id) for the models to load when the node starts (preload, pinned): the largest first,
    each once, on the device of its kind with the most room left where it fits beside those placed before it
    and what is resident already; a model that fits nowhere is left out (its first stage loads it)."""
    room = {d.id: d.free_mb for d in devices}
    out = []
    for m in sorted(wanted, key=lambda m: (-m.memory_mb, m.id)):
        if any(m.id in d.resident for d in devices):
            continue
        fits = [d for d in devices if d.kind in m.device_kinds and room[d.id] >= m.memory_mb - _EPS_MB]
        if fits:
            d = max(fits, key=lambda d: room[d.id])  # the first of equals
            room[d.id] -= m.memory_mb
            out.append((d.id, m.id))
    return out


def idle_unloads(devices: Sequence[DeviceView], models: Mapping[str, ModelProfile], now: float,
                 idle_timeout: float | None) -> list[tuple[str, str]]:
    """(device id, model id) of every loaded model idle for ``idle_timeout`` seconds; never a pinned one."""
    if idle_timeout is None or idle_timeout <= 0:
        return []
    return [(d.id, r.model_id) for d in devices for r in d.resident.values()
            if evictable(r, models) and now - r.last_used >= idle_timeout]


# -- pocket3d's placement -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _LoadOption:
    device: DeviceView
    victims: tuple[str, ...]
    destroyed: float  # expected seconds of reloading the evictions cause later
    left_mb: float  # free memory after the load
    own_backlog: float  # seconds of waiting work per instance of the models loaded there, which this load delays


class MemoryAwarePlacement(PlacementPolicy):
    """Run where loaded; else wait for a loaded instance if that is sooner than a load; else load where it
    fits best, switching a device that has work of its own only to balance backlogs. See the module docstring
    for the rules and the starvation reservation."""

    def __init__(self, eviction: ReloadCostEviction, starvation_seconds: float = 600.0, switch_factor: float = 1.0):
        self.eviction = eviction
        self.starvation_seconds = starvation_seconds
        self.switch_factor = switch_factor

    def place(self, stage: PendingStage, model: ModelProfile, devices: Sequence[DeviceView],
              models: Mapping[str, ModelProfile], stats: UsageStats, now: float,
              context: PlanContext | None = None) -> Assignment | None:
        ctx = context or PlanContext(ranked=[stage], pending_by_model={stage.model_id: 1})
        memo = self._memo(ctx, devices, models, now)
        if not memo["open"]:
            ctx.done = True  # no device has a free slot or could start a load: nothing more starts now
            return None
        starving = ctx.scratch.get("starving") == stage.stage_id
        if model.id in memo["hopeless"] and not starving:
            return None  # an earlier stage of this model found no way to start, and nothing has changed since
        usable = [d for d in devices if d.kind in model.device_kinds
                  and ctx.reserved.get(d.id, stage.stage_id) == stage.stage_id]
        hosts = [d for d in usable if model.id in d.resident]
        target = self._run_now(model, hosts, models, now)
        if target is not None:
            return Assignment(stage, target.id, (), load=False)
        wait = self._expected_wait(model, [d for d in devices if model.id in d.resident], models, now, ctx)
        if wait is not None and wait <= model.load_seconds:
            self._queue_behind(model, ctx)
            return None
        option, waiting_helps = self._best_load(model, usable, models, stats, now, ctx, memo, starving, wait)
        if option is not None:
            return Assignment(stage, option.device.id, option.victims, load=True)
        if not waiting_helps and not starving:
            memo["hopeless"].add(model.id)  # later stages of it (a longer wait) would be refused the same way
        if wait is not None:
            self._queue_behind(model, ctx)
        return None

    # per-call memo --------------------------------------------------------------------------------------------

    def _memo(self, ctx: PlanContext, devices: Sequence[DeviceView], models: Mapping[str, ModelProfile],
              now: float) -> dict:
        memo = ctx.scratch.get("memo")
        if memo is None or memo["version"] != ctx.version:
            longest_load = max((m.load_seconds for m in models.values()), default=0.0)
            free_at = {d.id: compute_free_at(d, models, now) for d in devices}
            memo = {"version": ctx.version, "free_at": free_at, "options": {}, "hopeless": set(),
                    "instances": Counter(m for d in devices for m in d.resident),
                    "open": any(free_at[d.id] <= now + longest_load and not d.loading for d in devices)
                    or any(self._has_slot(d) for d in devices)}
            ctx.scratch["memo"] = memo
        return memo

    @staticmethod
    def _has_slot(d: DeviceView) -> bool:
        return d.slots is None or d.computing < d.slots

    # run now ------------------------------------------------------------------------------------------------

    def _run_now(self, model: ModelProfile, hosts: Sequence[DeviceView], models: Mapping[str, ModelProfile],
                 now: float) -> DeviceView | None:
        ready = []
        for d in hosts:
            r = d.resident[model.id]
            if r.loading or not model.room_in(r):
                continue
            if d.slots is not None:
                if d.computing >= d.slots:
                    continue
                loads = d.loading
                # Backfill: beside a load in flight only a stage expected to end before the load does.
                if d.computing + len(loads) >= d.slots and any(
                        now + model.run_seconds > _load_done_at(x, models) for x in loads):
                    continue
            ready.append(d)
        if not ready:
            return None
        return min(ready, key=lambda d: (d.computing, len(d.loading), d.budget_mb, d.id))

    # wait ---------------------------------------------------------------------------------------------------

    def _expected_wait(self, model: ModelProfile, hosts: Sequence[DeviceView], models: Mapping[str, ModelProfile],
                       now: float, ctx: PlanContext) -> float | None:
        """Seconds until an instance that is resident already could start this stage, after the stages of the
        same model ranked above it in this call that chose to wait; None when it is resident nowhere."""
        if not hosts:
            return None
        queues = ctx.scratch.setdefault("host_free", {})
        free = queues.get(model.id)
        if free is None:
            free = []
            for d in hosts:
                r = d.resident[model.id]
                at = compute_free_at(d, models, now)
                if r.loading:
                    at = max(at, _load_done_at(r, models) + (model.run_seconds if r.running else 0.0))
                elif not model.room_in(r):
                    ends = sorted(max(t + model.run_seconds, now) for t in r.running_since) or [now + model.run_seconds]
                    at = max(at, ends[min(len(ends), r.running - model.max_concurrent + 1) - 1])
                free.append(at)
            heapq.heapify(free)
            queues[model.id] = free
        return max(0.0, free[0] - now)

    def _queue_behind(self, model: ModelProfile, ctx: PlanContext) -> None:
        free = ctx.scratch["host_free"][model.id]
        heapq.heapreplace(free, free[0] + model.run_seconds)

    # load ---------------------------------------------------------------------------------------------------

    def _best_load(self, model: ModelProfile, usable: Sequence[DeviceView], models: Mapping[str, ModelProfile],
                   stats: UsageStats, now: float, ctx: PlanContext, memo: dict, starving: bool,
                   wait: float | None) -> tuple[_LoadOption | None, bool]:
        """The device to load the model on, if any, and whether a longer wait could have changed the answer."""
        instances = memo["instances"][model.id]
        backlog = ctx.pending_by_model.get(model.id, 0) * model.run_seconds / (instances + 1)
        best: tuple[tuple, _LoadOption] | None = None
        waiting_helps = False
        for option in self._load_options(model, usable, models, stats, now, ctx, memo, starving):
            if option.own_backlog > 0 and backlog < option.own_backlog and not starving:
                continue  # that device has more work of its own per instance than this model would have there
            if wait is not None and wait <= self.switch_factor * (model.load_seconds + option.destroyed):
                waiting_helps = True
                continue  # a resident instance comes free before this load has paid back (with a margin)
            key = (option.own_backlog > 0, option.destroyed, option.left_mb, option.device.id)
            if best is None or key < best[0]:
                best = (key, option)
        return (None if best is None else best[1]), waiting_helps

    def _load_options(self, model: ModelProfile, usable: Sequence[DeviceView], models: Mapping[str, ModelProfile],
                      stats: UsageStats, now: float, ctx: PlanContext, memo: dict,
                      starving: bool) -> list[_LoadOption]:
        """Devices that could start loading the model now, each with its evictions (cached for this version of
        the working copy)."""
        key = (model.id, starving, tuple(d.id for d in usable))
        cached = memo["options"].get(key)
        if cached is not None:
            return cached
        instances = memo["instances"]
        options = []
        for d in usable:
            if model.id in d.resident or d.loading:
                continue  # one instance per device; one load at a time per device (disk and bus bound)
            if memo["free_at"][d.id] > now + model.load_seconds:
                continue  # its compute stays busy past the load: decide later, when more is known
            victims = self.eviction.victims(d, model.memory_mb - d.free_mb, models, stats, now,
                                            ctx.pending_by_model, only_idle_demand=not starving,
                                            instances=instances)
            if victims is None:
                continue
            destroyed = sum(self._reload_cost(d.resident[v], models, stats, now, ctx, instances[v])
                            for v in victims)
            left = d.free_mb + sum(d.resident[v].memory_mb for v in victims) - model.memory_mb
            own = sum(ctx.pending_by_model.get(m, 0) * models[m].run_seconds / instances[m]
                      for m, r in d.resident.items()
                      if m in models and m not in victims and not r.loading)
            options.append(_LoadOption(d, tuple(victims), destroyed, left, own))
        memo["options"][key] = options
        return options

    def _reload_cost(self, r: ResidentModel, models: Mapping[str, ModelProfile], stats: UsageStats, now: float,
                     ctx: PlanContext, instances: int) -> float:
        """Expected seconds of loading that evicting ``r`` causes later: its load time x the chance it is
        needed again (waiting stages make that certain for the last instance)."""
        profile = models.get(r.model_id)
        if profile is None:
            return 0.0
        demand = ctx.pending_by_model.get(r.model_id, 0) + stats.rate(r.model_id, now) * self.eviction.horizon
        if instances > 1:
            demand /= instances
        return profile.load_seconds * min(1.0, demand)

    # starvation ---------------------------------------------------------------------------------------------

    def prepare(self, devices: Sequence[DeviceView], models: Mapping[str, ModelProfile], stats: UsageStats,
                now: float, context: PlanContext) -> None:
        """Find the starving stage and hold a device for it before better-ranked stages are placed.

        Only the best-ranked stage of a model resident nowhere can be starving: it alone may evict models
        with waiting work, and it holds one device (nothing else starts there) until it is placed. Letting
        every old stage do so would churn the memory under a backlog; a stage whose model is resident
        somewhere gets its turn there.
        """
        instances = Counter(m for d in devices for m in d.resident)
        for stage in context.ranked:
            model = models.get(stage.model_id)
            if model is None or instances[model.id]:
                continue
            if now - stage.ready < self.starvation_seconds:
                return
            device = self._device_to_hold(model, devices, models, now, context.pending_by_model)
            if device is not None:
                context.scratch["starving"] = stage.stage_id
                context.reserved[device.id] = stage.stage_id
            return

    def _device_to_hold(self, model: ModelProfile, devices: Sequence[DeviceView], models: Mapping[str, ModelProfile],
                        now: float, pending: Mapping[str, int]) -> DeviceView | None:
        """A device that holds the model once what runs there ends, without cutting a protected batch short
        (holding one that cannot be freed yet would only idle it); one where it fits now first."""
        def kept_mb(d: DeviceView) -> float:
            return sum(r.memory_mb for r in d.resident.values()
                       if ((p := models.get(r.model_id)) is not None and p.pinned)
                       or self.eviction.protected(r, models, now, pending))

        def fits_now(d: DeviceView) -> bool:
            return d.free_mb + sum(r.memory_mb for r in d.resident.values() if evictable(r, models)) >= \
                model.memory_mb

        fits = [d for d in devices if d.kind in model.device_kinds
                and d.budget_mb - d.reserved_mb - kept_mb(d) >= model.memory_mb]
        if not fits:
            return None
        return min(fits, key=lambda d: (not fits_now(d), compute_free_at(d, models, now), -d.free_mb, d.id))


# -- baselines ----------------------------------------------------------------------------------------------


class SerialPlacement(PlacementPolicy):
    """One stage in flight on the whole node, on its largest device (the seed design's queue loop)."""

    def __init__(self, eviction: EvictionPolicy):
        self.eviction = eviction

    def place(self, stage: PendingStage, model: ModelProfile, devices: Sequence[DeviceView],
              models: Mapping[str, ModelProfile], stats: UsageStats, now: float,
              context: PlanContext | None = None) -> Assignment | None:
        if any(r.running for d in devices for r in d.resident.values()):
            if context is not None:
                context.done = True
            return None
        usable = [d for d in devices if d.kind in model.device_kinds]
        if not usable:
            return None
        d = max(usable, key=lambda d: (d.budget_mb, d.id))
        r = d.resident.get(model.id)
        if r is not None and not r.loading:
            return Assignment(stage, d.id, (), load=False)
        victims = self.eviction.victims(d, model.memory_mb - d.free_mb, models, stats, now)
        return None if victims is None else Assignment(stage, d.id, tuple(victims), load=True)


class PinnedPlacement(PlacementPolicy):
    """Each model on its own device only, one stage at a time per device slot, nothing evicted."""

    def __init__(self, pins: Mapping[str, str]):
        self.pins = dict(pins)

    def place(self, stage: PendingStage, model: ModelProfile, devices: Sequence[DeviceView],
              models: Mapping[str, ModelProfile], stats: UsageStats, now: float,
              context: PlanContext | None = None) -> Assignment | None:
        def full(d: DeviceView) -> bool:
            return d.slots is not None and d.computing + len(d.loading) >= d.slots

        if context is not None and all(full(d) for d in devices):
            context.done = True
            return None
        d = next((d for d in devices if d.id == self.pins.get(model.id)), None)
        if d is None or full(d):
            return None
        r = d.resident.get(model.id)
        if r is not None:
            return None if r.loading or not model.room_in(r) else Assignment(stage, d.id, (), load=False)
        return Assignment(stage, d.id, (), load=True) if d.free_mb >= model.memory_mb - _EPS_MB else None


class AnySlotPlacement(PlacementPolicy):
    """The floor of the benchmark: a stage starts on any device of its kind with a free compute slot. Given
    profiles with no memory and no load time (as the benchmark does), that is a node where every model is
    resident on every device: what no placement can beat at the same order."""

    def place(self, stage: PendingStage, model: ModelProfile, devices: Sequence[DeviceView],
              models: Mapping[str, ModelProfile], stats: UsageStats, now: float,
              context: PlanContext | None = None) -> Assignment | None:
        for d in devices:
            if d.kind not in model.device_kinds or (d.slots is not None and d.computing + len(d.loading) >= d.slots):
                continue
            r = d.resident.get(model.id)
            if r is None:
                victims = LruEviction().victims(d, model.memory_mb - d.free_mb, models, stats, now)
                if victims is not None:
                    return Assignment(stage, d.id, tuple(victims), load=True)
            elif not r.loading and model.room_in(r):
                return Assignment(stage, d.id, (), load=False)
        return None


def pin_models(models: Mapping[str, ModelProfile], devices: Sequence[DeviceView]) -> dict[str, str]:
    """Fix each model to one device up front: largest model first, onto the device with the least expected
    work (sum of its models' run_seconds) where it fits beside those already pinned, then the most room."""
    room = {d.id: d.budget_mb for d in devices}
    work = {d.id: 0.0 for d in devices}
    pins: dict[str, str] = {}
    for m in sorted(models.values(), key=lambda m: (-m.memory_mb, m.id)):
        fits = [d for d in devices if d.kind in m.device_kinds and room[d.id] >= m.memory_mb - _EPS_MB]
        if not fits:
            raise ValueError(f"static pinning: {m.id} ({m.memory_mb:.0f} MB) fits on no device beside the "
                             "models pinned before it")
        d = min(fits, key=lambda d: (work[d.id], -room[d.id], d.id))
        pins[m.id] = d.id
        room[d.id] -= m.memory_mb
        work[d.id] += m.run_seconds
    return pins


# -- the policies -------------------------------------------------------------------------------------------


def pocket3d_policy(priority_weights: Mapping[str, float], *, ageing_seconds: float = 120.0,
                    max_wait: float = 600.0, reuse_horizon: float = 300.0, switch_factor: float = 1.0,
                    min_batch: float = 10.0) -> SchedulingPolicy:
    """The node's policy: size-aware order with weights, priorities, ageing and the ``max_wait`` bound;
    memory-aware placement that batches; eviction by reload cost (see the module docstring)."""
    eviction = ReloadCostEviction(horizon=reuse_horizon, min_batch=min_batch)
    return SchedulingPolicy("pocket3d", RemainingWorkOrdering(priority_weights, ageing_seconds, urgent_after=max_wait),
                            MemoryAwarePlacement(eviction, max_wait, switch_factor), eviction)


def shortest_remaining_work_policy(*, ageing_seconds: float = 120.0) -> SchedulingPolicy:
    """Shortest expected remaining work of the whole job first, with ageing, on pocket3d's placement; no feature
    weights, priorities or wait bound (a baseline)."""
    eviction = ReloadCostEviction()
    return SchedulingPolicy("shortest work", RemainingWorkOrdering(None, ageing_seconds),
                            MemoryAwarePlacement(eviction), eviction)


def fifo_floor_policy() -> SchedulingPolicy:
    """FIFO on any free device (see :class:`AnySlotPlacement`): with memory and loads taken away, the floor."""
    return SchedulingPolicy("FIFO floor", FifoOrdering(), AnySlotPlacement(), LruEviction(), unload_idle=False)


def serial_fifo_policy() -> SchedulingPolicy:
    eviction = LruEviction()
    return SchedulingPolicy("serial FIFO", FifoOrdering(), SerialPlacement(eviction), eviction)


def static_pinning_policy(models: Mapping[str, ModelProfile], devices: Sequence[DeviceView]) -> SchedulingPolicy:
    return SchedulingPolicy("static pinning", FifoOrdering(), PinnedPlacement(pin_models(models, devices)),
                            LruEviction(), unload_idle=False)
