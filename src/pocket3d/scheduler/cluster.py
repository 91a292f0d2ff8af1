"""What a node knows of the rest of its cluster, through the store's ``nodes`` table.

- :class:`Membership`: this node's row, written at start and at every heartbeat (``cluster.heartbeat_seconds``):
  for a worker, what its scheduler says of itself (devices, resident models, what it can host and measured).
- :class:`Peers`: a worker's view of the others, so it leaves a stage to a worker that holds the stage's model
  loaded with room to spare (``cluster.prefer_resident_seconds``): hot models stay hot across the cluster.
- :class:`DatabaseClock`: the time every node of a cluster reckons leases and heartbeats in: the database's.
- :class:`ClusterView`: the gateway's :class:`~pocket3d.scheduler.base.Scheduler`. A gateway runs no model; it
  answers queue positions and ETAs from the whole queue in the policy's order, with the run times and device slots
  the workers report, lists the workers' devices, and judges a model available if a worker of the cluster hosts it
  (one scaled to zero included), so a job waits for the pool that KEDA starts rather than being refused.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from pocket3d import __version__
from pocket3d.config import Settings
from pocket3d.jobs import nodes
from pocket3d.jobs.records import JobRecord, StageStatus
from pocket3d.jobs.store import Store
from pocket3d.models.registry import RegisteredModel, Registry
from pocket3d.models.spec import Device
from pocket3d.scheduler.base import DeviceState, Estimate, Measured, Scheduler, queue_places
from pocket3d.scheduler.policy import ModelProfile, PendingStage, SchedulingPolicy, pocket3d_policy

log = logging.getLogger(__name__)

BEATS_TO_GONE = 3  # heartbeats missed before a node counts as gone
KNOWN_SECONDS = 7 * 86400.0  # a worker's row (and the models it hosted) is remembered this long after it stopped
DEFAULT_RUN_SECONDS = 10.0  # a model no worker has measured yet
VIEW_TTL = 1.0  # seconds a gateway's reading of the queue and the nodes is used
RUNNING_TTL = 0.5  # seconds a worker's reading of what runs on its peers is used


class DatabaseClock:
    """The database server's clock, read from this machine: ``time.time()`` plus the offset measured at start and at
    every heartbeat (``sync``). Leases and heartbeats are written by one machine and judged by another; in the time
    of each machine's own clock, a worker whose clock ran ahead by more than a lease took over every other worker's
    stages as soon as they were claimed, and one running behind kept stages of a dead worker for as long."""

    def __init__(self, store: Store):
        self.store = store
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset

    def sync(self) -> None:
        before = time.time()
        server = nodes.database_time(self.store)
        after = time.time()
        offset = server - (before + after) / 2
        if abs(offset - self.offset) > 1.0:
            log.info("this machine's clock is %+.1f s off the database's: leases and heartbeats use the database's",
                     -offset)
        self.offset = offset


def node_id(role: str) -> str:
    """This process's name in the cluster (also the lease owner of what it claims): host, pid, a random tail."""
    return f"{socket.gethostname()[:60]}-{os.getpid()}-{role}-{os.urandom(2).hex()}"


class Membership:
    """This node's row in the ``nodes`` table: written every ``cluster.heartbeat_seconds``; marked stopped when
    the node leaves (the row stays a while, so gateways know which models the cluster hosts while a pool is
    scaled to zero); a worker's row carries ``state()``."""

    def __init__(self, store: Store, settings: Settings, *, node: str, role: str,
                 state: Callable[[], Mapping[str, Any]] = dict, clock: DatabaseClock | None = None):
        self.store, self.settings, self.id, self.role, self._state = store, settings, node, role, state
        self.clock: Callable[[], float] = clock or time.time
        self.started_at = self.clock()
        self.draining = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failing = False

    def start(self) -> None:
        self.beat()
        self._thread = threading.Thread(target=self._loop, name="heartbeat", daemon=True)
        self._thread.start()

    def drain(self) -> None:
        self.draining = True
        self.beat()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        try:
            nodes.leave(self.store, self.id, now=self.clock())
        except Exception as e:
            log.warning("could not mark this node stopped in the nodes table: %s", e)

    def beat(self) -> None:
        if isinstance(self.clock, DatabaseClock):
            self.clock.sync()
        now = self.clock()
        nodes.heartbeat(self.store, self.id, role=self.role, host=socket.gethostname(), pid=os.getpid(),
                        version=__version__, started_at=self.started_at, draining=self.draining,
                        state=self._state(), now=now)

    def _loop(self) -> None:
        interval = self.settings.cluster.heartbeat_seconds
        while not self._stop.wait(interval):
            try:
                self.beat()
                if self._failing:
                    log.info("heartbeats are written again")
                    self._failing = False
                nodes.prune(self.store, older_than=self.clock() - KNOWN_SECONDS)
            except Exception as e:  # the database is away: keep trying; leases say what is lost meanwhile
                if not self._failing:
                    log.warning("writing this node's heartbeat failed (%s); retrying", str(e).splitlines()[0])
                    self._failing = True


class _NodesCache:
    """The ``nodes`` table, read at most every ``ttl`` seconds."""

    def __init__(self, store: Store, settings: Settings, ttl: float, clock: Callable[[], float] = time.time):
        self.store, self.settings, self.ttl, self.clock = store, settings, ttl, clock
        self._at = -1e9
        self._rows: list[nodes.NodeRecord] = []
        self._lock = threading.Lock()

    def rows(self) -> list[nodes.NodeRecord]:
        now = time.monotonic()
        with self._lock:
            if now - self._at < self.ttl:
                return self._rows
        try:
            rows = nodes.known(self.store, since=self.clock() - KNOWN_SECONDS, role=nodes.WORKER)
        except Exception as e:  # the database is away: plan with what was read last
            log.debug("reading the nodes table failed: %s", e)
            return self._rows
        with self._lock:
            self._rows, self._at = rows, now
        return rows

    def live(self) -> list[nodes.NodeRecord]:
        gone_after = BEATS_TO_GONE * self.settings.cluster.heartbeat_seconds
        now = self.clock()
        return [n for n in self.rows() if n.stopped_at is None and now - n.heartbeat_at <= gone_after]


class Peers:
    """A worker's view of the other workers, for :meth:`leave_to_others`."""

    def __init__(self, store: Store, settings: Settings, me: str, clock: Callable[[], float] = time.time):
        self.store, self.settings, self.me = store, settings, me
        self._nodes = _NodesCache(store, settings, ttl=settings.cluster.heartbeat_seconds / 2, clock=clock)
        self._running: dict[tuple[str, str, str | None], int] = {}
        self._running_at = -1e9

    def leave_to_others(self, stage: PendingStage, now: float) -> bool:
        """Whether to leave this stage for now: another live worker, not draining, holds its model loaded with
        room for one more stage, and the stage has waited less than ``cluster.prefer_resident_seconds``. Which
        models a peer holds comes from its heartbeat; what runs there now from the stages table, since a
        heartbeat seconds old may show room that its last claims filled (and the stage would wait for nothing)."""
        if now - stage.ready >= self.settings.cluster.prefer_resident_seconds:
            return False
        running: dict[tuple[str, str, str | None], int] | None = None
        for n in self._nodes.live():
            if n.id == self.me or n.draining:
                continue
            limit = int(n.models.get(stage.model_id, {}).get("max_concurrent") or 1)
            for d in n.devices:
                held = d.get("resident", {}).get(stage.model_id)
                if held is None or held.get("loading"):
                    continue
                running = self._running_now() if running is None else running
                on_device = sum(c for (owner, device, _), c in running.items() if owner == n.id and device == d["id"])
                if running.get((n.id, d["id"], stage.model_id), 0) < limit and on_device < int(d.get("slots", 1)):
                    return True
        return False

    def _running_now(self) -> dict[tuple[str, str, str | None], int]:
        """What runs where, read at most every RUNNING_TTL seconds (a dispatch round asks for each stage)."""
        at = time.monotonic()
        if at - self._running_at >= RUNNING_TTL:
            try:
                self._running = nodes.running_stages(self.store)
            except Exception as e:  # the database is away: decide with what was read last
                log.debug("reading the running stages failed: %s", e)
            self._running_at = at
        return self._running


class ClusterView(Scheduler):
    """The gateway's scheduler: reads, never runs (see the module's docstring)."""

    def __init__(self, store: Store, settings: Settings, registry: Registry,
                 policy: SchedulingPolicy | None = None, clock: Callable[[], float] = time.time):
        self.store, self.settings, self.registry = store, settings, registry
        self.policy = policy or pocket3d_policy(settings.scheduler.priority_weights,
                                                ageing_seconds=settings.scheduler.ageing_seconds,
                                                max_wait=settings.scheduler.max_wait)
        self._nodes = _NodesCache(store, settings, ttl=VIEW_TTL, clock=clock)
        self._queue_at = -1e9
        self._queue: dict[int, tuple[int, float]] = {}  # stage id -> (rank, run seconds ranked before it)
        self._queue_lock = threading.Lock()
        registry.judge = self.availability

    # -- lifecycle: a gateway has no devices and claims nothing ---------------------------------------------

    def start(self) -> None: ...

    def stop(self, timeout: float = 10.0) -> None: ...

    def wake(self) -> None:
        """Workers hear of new work from PostgreSQL (the queue channel), not from here."""

    def cancel(self, job_id: str) -> None:
        """The worker running it hears of the cancel from PostgreSQL (the cancel channel)."""

    # -- what the workers report ----------------------------------------------------------------------------

    def availability(self, model: RegisteredModel) -> list[str]:
        """Why no worker of this cluster can run the model ([]: some can, or did and may again when its pool
        scales up; a cluster none of whose workers ever reported judges by the registry alone)."""
        if model.adapter_cls is None:
            return list(model.static_reasons)
        hosted = self.settings.cluster.hosted_models
        if "*" in hosted or model.spec.id in hosted:  # a pool scaled to zero hosts it: its jobs wait for the pool
            return []
        workers = self._nodes.rows()
        if not workers or any(model.spec.id in n.models for n in workers):
            return []
        return [f"no worker of this cluster hosts it (none has in the last {KNOWN_SECONDS / 86400:.0f} days): "
                "start a worker whose registry lists it, with the packages, weights and device it needs (a pool "
                "scaled to zero: name the model in cluster.hosted_models)"]

    @property
    def device_list(self) -> list[Device]:
        return [Device(id=f"{n.id}/{d['id']}", kind=d["kind"], name=d.get("name", ""),
                       memory_total=int(d.get("memory_total", 0)), virtual=bool(d.get("virtual")))
                for n in self._nodes.live() for d in n.devices]

    def devices(self) -> list[DeviceState]:
        out = []
        for n in self._nodes.live():
            for d in n.devices:
                device = Device(id=f"{n.id}/{d['id']}", kind=d["kind"], name=d.get("name", ""),
                                memory_total=int(d.get("memory_total", 0)), virtual=bool(d.get("virtual")))
                resident = d.get("resident", {})
                out.append(DeviceState(device, sorted(resident), list(d.get("stages", [])),
                                       memory_used=float(d.get("used_mb", 0.0)),
                                       budget=float(d.get("budget_mb", 0.0)), worker_pid=None,
                                       loading_models=sorted(m for m, r in resident.items() if r.get("loading"))))
        return out

    def budget_of(self, device: Device) -> float:
        node, _, local = device.id.partition("/")
        for n in self._nodes.live():
            if n.id == node:
                for d in n.devices:
                    if d["id"] == local:
                        return float(d.get("budget_mb", 0.0))
        return 0.0

    def measured(self, model_id: str) -> Measured:
        seen = [n.models[model_id] for n in self._nodes.rows() if model_id in n.models]

        def mean(key: str) -> float | None:
            values = [float(m[key]) for m in seen if m.get(key) is not None]
            return sum(values) / len(values) if values else None

        peaks = [float(m["peak_mb"]) for m in seen if m.get("peak_mb") is not None]
        return Measured(max(peaks) if peaks else None, mean("load_seconds"), mean("run_seconds"))

    # -- positions and ETAs, cluster-wide -------------------------------------------------------------------

    def _run_seconds(self, model_id: str | None) -> float | None:
        if model_id is None:
            return self.measured_export()
        return self.measured(model_id).run_seconds

    def measured_export(self) -> float | None:
        values = [float(n.state["export_seconds"]) for n in self._nodes.rows() if n.state.get("export_seconds")]
        return sum(values) / len(values) if values else None

    def _ranks(self) -> dict[int, tuple[int, float]]:
        """The queue in the policy's order, read at most every VIEW_TTL seconds by this gateway."""
        now = time.monotonic()
        with self._queue_lock:
            if now - self._queue_at < VIEW_TTL:
                return self._queue
            queued = self.store.queued_stages()
            profiles: dict[str, ModelProfile] = {}
            pending = []
            for q in queued:
                if q.model_id is None:
                    continue
                if q.model_id not in profiles:
                    spec = self.registry.get(q.model_id).spec if q.model_id in self.registry else None
                    profiles[q.model_id] = ModelProfile(
                        id=q.model_id, memory_mb=float(spec.vram_requirement if spec else 0), load_seconds=0.0,
                        run_seconds=self._run_seconds(q.model_id) or DEFAULT_RUN_SECONDS,
                        max_concurrent=spec.max_concurrent if spec else 1,
                        device_kinds=spec.devices if spec else ("cuda",))
                for later in q.later:
                    if later is not None and later not in profiles:
                        profiles[later] = ModelProfile(id=later, memory_mb=0.0, load_seconds=0.0,
                                                       run_seconds=self._run_seconds(later) or DEFAULT_RUN_SECONDS)
                pending.append(PendingStage(stage_id=q.stage_id, job_id=q.job_id, model_id=q.model_id,
                                            feature=q.feature, priority=q.priority, submitted_at=q.submitted_at,
                                            ready_at=q.queued_at, later=tuple(m for m in q.later if m is not None)))
            ranks, _ = queue_places(self.policy.ordering.order(pending, time.time(), profiles),
                                    lambda model_id: profiles[model_id].run_seconds,
                                    under_way={q.stage_id for q in queued if q.index > 0})
            # export stages are taken first come, first served by the workers that take them
            exports = sorted((q for q in queued if q.model_id is None), key=lambda q: (q.queued_at, q.stage_id))
            export_seconds = self.measured_export() or 1.0
            for rank, q in enumerate(exports, 1):
                ranks[q.stage_id] = (rank, (rank - 1) * export_seconds)
            self._queue, self._queue_at = ranks, now
            return ranks

    def estimate(self, job: JobRecord) -> Estimate:
        if job.status.is_final:
            return Estimate(None, None)
        waiting = next((s for s in job.stages if s.status == StageStatus.QUEUED), None)
        place = self._ranks().get(waiting.id) if waiting is not None else None
        position, seconds_ahead = place if place is not None else (None, 0.0)
        remaining = [s for s in job.stages if s.status in (StageStatus.PENDING, StageStatus.QUEUED,
                                                           StageStatus.RUNNING)]
        times = {s.model_id: self._run_seconds(s.model_id) for s in remaining}
        if any(v is None for v in times.values()):
            return Estimate(position, None)  # no worker has measured some model yet: no number rather than a guess
        eta = sum(times[s.model_id] * (1.0 - s.progress) if s.status == StageStatus.RUNNING else times[s.model_id]
                  for s in remaining)
        if position is not None and waiting is not None:
            slots = self._slots(waiting.model_id)
            if not slots:
                return Estimate(position, None)  # nothing running can take it: it waits for a worker to start
            eta += seconds_ahead / slots
        return Estimate(position, round(eta, 1))

    def _slots(self, model_id: str | None) -> int:
        """Stages the live workers able to run this model compute at once."""
        total = 0
        for n in self._nodes.live():
            if n.draining:
                continue
            if model_id is None:
                total += 2 if n.takes_exports else 0
                continue
            if model_id not in n.models:
                continue
            kinds = n.models[model_id].get("kinds") or ["cpu", "cuda"]
            total += sum(int(d.get("slots", 1)) for d in n.devices if d["kind"] in kinds)
        return total
