"""The node scheduler: the mechanism that runs the policy. One per node.

It reads the queued stages from the store, asks :func:`policy.plan` which of them start now, where, and after
which evictions, claims those stages under a lease, and hands them to the device workers (one subprocess per
device, :mod:`pocket3d.workers`). Results come back through callbacks and become transitions in the store.
What it knows of each model (memory, load and run time) starts from the registry and is corrected by what the
workers measure.

Failure handling, each a rule of the issue:
- a worker that dies (SIGKILL, segfault, the OOM killer) is restarted with nothing resident, and its stages are
  retried up to ``scheduler.max_attempts``, then failed with ``WORKER_CRASHED``;
- an out-of-memory error inside a model evicts the other models on that device and retries once, then fails
  with ``OUT_OF_MEMORY``;
- a stage whose model's load takes longer than ``scheduler.load_timeout``, or whose run takes longer than
  ``scheduler.job_timeout`` (counted from its hand-over to the worker, so a slow cold start costs a user's stage
  nothing), is killed (with its worker: a model that hangs cannot be stopped otherwise) and failed with
  ``TIMEOUT``; a cancelled stage that does not stop within ``scheduler.cancel_grace`` seconds is killed the same
  way.
pocket3d's own stages (orient; export: format conversion, preview) run in a worker process of their own
(:mod:`pocket3d.scheduler.own_stages`), so that none of that work lands in the process that serves the API.
"""

from __future__ import annotations

import heapq
import json
import logging
import os
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from structlog.contextvars import bound_contextvars, get_contextvars

from pocket3d.config import Settings
from pocket3d.errors import ErrorCode, storage_failure
from pocket3d.jobs import transitions
from pocket3d.jobs.records import (
    EXPORT_STAGE,
    OWN_STAGES,
    ClaimedStage,
    JobRecord,
    QueuedStage,
    StageRecord,
    StageStatus,
    StageWarning,
)
from pocket3d.jobs.store import Store
from pocket3d.models.registry import Registry
from pocket3d.models.spec import Device, ModelSpec
from pocket3d.scheduler import devices as inventory
from pocket3d.scheduler import stage_io
from pocket3d.scheduler.base import DeviceState, Estimate, Measured, Scheduler, SchedulerObserver, queue_places
from pocket3d.scheduler.own_stages import DETAILS_KEY, OWN_STAGES_MODEL_ID, OwnStages, own_stages_spec
from pocket3d.scheduler.cluster import Peers
from pocket3d.scheduler.policy import (
    Assignment,
    DeviceView,
    ModelProfile,
    PendingStage,
    ResidentModel,
    SchedulingPolicy,
    UsageStats,
    idle_unloads,
    plan,
    pocket3d_policy,
    preload_placement,
)
from pocket3d.storage import ArtifactStore
from pocket3d.storage.locks import BlobLock
from pocket3d.workers.supervisor import DeviceWorker, StageRequest, StageResult, WorkerUnavailable

log = logging.getLogger(__name__)

Clock = Callable[[], float]
CANCELLED = "CANCELLED"
REQUEUE = "REQUEUE"  # the stage never reached a model (its worker was restarting): queued again, attempt uncounted
DEFAULT_LOAD_SECONDS = 5.0  # until a load of the model has been measured
DEFAULT_RUN_SECONDS = 10.0  # until a run of the model has been measured
CPU_MODEL_MB = 512  # a CPU model that declares no memory: a guess until it is measured
MEASURED_MARGIN = 1.15  # measured peaks are padded: the next input may be larger
STORAGE_PAUSE = 5.0  # seconds without new claims after the disk or the store refused a write
READING_TTL = 2.0  # seconds an NVML reading of a GPU's free memory is used for its budget
UNLOAD_REASONS = {"idle": "idle", "making room": "evicted", "out of memory on the device": "out_of_memory"}
PROGRESS_WRITE_INTERVAL = 0.2  # seconds between a stage's progress writes; what comes between is written later
OWN_STAGE_CONCURRENCY = 2  # orient and export stages at once in the own-stage worker
QUEUE_RESYNC_SECONDS = 30.0  # the incremental queue view is read whole again this often (a safety net)
DISPATCH_INTERVAL = 0.05  # seconds between two dispatch rounds at least: a burst of wakes becomes one round
MAX_DISPATCH_PAUSE = 0.25  # seconds: the most a wake waits for the next round
# A queue longer than LONG_QUEUE stages is ranked whole (and its places published) at most once a RANK_INTERVAL; the
# rounds between plan from the top PLAN_WINDOW of that ranking with the stages queued since merged in by the same
# key. Ranking thousands of stages every round cost a quarter of the API process during a burst of submissions,
# while a round starts only the few stages that its free slots take.
LONG_QUEUE = 256
RANK_INTERVAL = 1.0
PLAN_WINDOW = 256


@dataclass
class _Resident:
    memory_mb: float
    loaded_at: float
    last_used: float
    running: int = 0
    loading: bool = False


@dataclass
class _Running:
    claim: ClaimedStage
    device_id: str | None  # None for an export stage
    model_id: str | None
    deadline: float  # of its current phase: the load's (load_timeout), else the run's (job_timeout)
    started: float = 0.0
    done: Future = field(default_factory=Future)
    stop_reason: str | None = None  # TIMEOUT or CANCELLED once the scheduler decided to stop it
    stop_asked_at: float | None = None
    last_progress_write: float = 0.0
    unsaved: tuple[float, str | None] | None = None  # progress held back by the rate limit, written later
    progress_lock: threading.Lock = field(default_factory=threading.Lock)  # one progress write at a time
    # Another stage or a load shared its worker process meanwhile: the process's peak is not this model's alone.
    shared: bool = False
    handed_at: float | None = None  # when run() gave it to the worker (a cancel before that needs no kill)
    killed: bool = False  # its worker was killed to stop it
    phase: str = "preparing"  # preparing, loading (its model into the worker), handed (run() gave it over)
    bystander: bool = False  # its worker was killed to stop another stage
    settled: threading.Event = field(default_factory=threading.Event)  # its end is recorded in the store
    limit: str = "job_timeout"  # the setting its deadline comes from: job_timeout, or load_timeout while loading

    @property
    def run_key(self) -> tuple[str, str]:
        stage = self.claim.stage
        return _run_key(stage.model_id, stage.name), _quality(self.claim.job_request)


@dataclass
class _Learned:
    """What the workers measured of one model on this node."""

    peak_mb: float | None = None
    load_seconds: float | None = None
    run_seconds: float | None = None  # exponentially weighted mean


class NodeScheduler(Scheduler):
    def __init__(self, *, settings: Settings, store: Store, artifacts: ArtifactStore, registry: Registry,
                 blob_lock: BlobLock, release: transitions.ReleasePolicy, clock: Clock = time.time,
                 policy: SchedulingPolicy | None = None, worker_env: dict[str, str] | None = None,
                 on_storage_failure: Callable[[str], None] = lambda reason: None,
                 observer: SchedulerObserver | None = None, sole_node: bool = True, peers: Peers | None = None,
                 node: str | None = None):
        """``on_storage_failure(reason)``: the disk or the store refused a write (readiness then probes).
        ``observer``: told of stages, loads, unloads and worker restarts as they happen (the metrics).
        ``sole_node``: the only node on its store (embedded): what ran when it stopped was its own, and a stage no
        device here can hold fails at once. Otherwise (a cluster's worker) it claims only stages of models it can
        host, leaves a stage to ``peers`` holding its model loaded, and recovers only expired leases.
        ``node``: its name in the cluster (the lease owner of its claims)."""
        self.settings, self.store, self.artifacts, self.registry = settings, store, artifacts, registry
        self.observer = observer or SchedulerObserver()
        self._on_storage_failure = on_storage_failure
        self._storage_pause_until = 0.0  # no new claims before this (monotonic): the disk refused a write
        self._storage_logged: dict[str, float] = {}
        self.blob_lock, self.release, self.clock = blob_lock, release, clock
        self.policy = policy or pocket3d_policy(settings.scheduler.priority_weights,
                                                ageing_seconds=settings.scheduler.ageing_seconds,
                                                max_wait=settings.scheduler.max_wait)
        self.worker_id = node or f"{socket.gethostname()[:40]}-{os.getpid()}-{id(self) & 0xFFFF:04x}"
        self.sole_node, self.peers = sole_node, peers
        self._draining = False  # a worker told to stop claims nothing more
        self._drain_cut = threading.Event()
        self._hostable: set[str] | None = None  # a cluster's worker: the models it can host (None: any)
        self._devices = inventory.discover(settings.gpu)
        self._device_by_id = {d.id: d for d in self._devices}
        self._worker_env = worker_env
        self._workers: dict[str, DeviceWorker] = {}
        self._resident: dict[str, dict[str, _Resident]] = {d.id: {} for d in self._devices}
        self._running: dict[int, _Running] = {}
        self._learned: dict[str | None, _Learned] = {}  # None: pocket3d's own stages (orient, export)
        # Measured run seconds by (model id, or an own stage's name; the job's quality): the ETA's evidence. A
        # model at quality high can take several times its medium time.
        self._run_times: dict[tuple[str, str], float] = {}
        self._oom_retried: set[int] = set()
        # stage id -> (rank in the policy's last ordering, run seconds of the stages ranked before it): status
        # polls read a job's place in O(1) instead of walking the queue
        self._queue: dict[int, tuple[int, float]] = {}
        self._queue_tail: tuple[int, float] = (1, 0.0)  # the place of a stage queued since the last pass
        # The queue as the planner sees it, kept up to date from the queue view's changes: model stages by stage id
        # (each counted in the usage stats once, when first seen), how many per model, the model ids of the stages
        # after them (the size-aware order needs those run times), orient and export stages, and the ranking of the
        # last whole round with the stages queued since then.
        self._pending: dict[int, PendingStage] = {}
        self._pending_models: Counter[str] = Counter()
        self._later_models: Counter[str] = Counter()
        self._under_way: set[int] = set()  # pending stage ids of jobs that ran a stage before (queue_places)
        self._own_queued: dict[int, QueuedStage] = {}
        self._ranking: list[PendingStage] = []
        self._ranked_at = float("-inf")  # monotonic
        self._fresh: dict[int, PendingStage] = {}  # pending since the ranking was made
        self.stats = UsageStats()
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._wakeup = threading.Condition()
        self._woken = False
        self._threads: list[threading.Thread] = []
        self._exports = ThreadPoolExecutor(max_workers=2, thread_name_prefix="export")
        self._stages = ThreadPoolExecutor(max_workers=64, thread_name_prefix="stage")
        self._estimates: dict[str, tuple[int, float, Estimate]] = {}
        self._readings: dict[str, tuple[float, inventory.DeviceReading]] = {}
        self._killing: dict[str, str] = {}  # device id -> the stage its worker is being killed to stop
        self._unloading: set[tuple[str, str]] = set()  # (device id, model id) being unloaded now
        self._warming: set[tuple[str, str]] = set()  # (device id, model id) preloads not finished yet
        # The queued stages by job, as last read. Where this process is the store's only writer (SQLite) the
        # store's after-commit notices say which jobs changed, and only those are read again each round; a shared
        # database is read whole every round (other processes write to it).
        self._incremental = store.is_sqlite
        self._queued: dict[str, list[QueuedStage]] = {}
        self._changed_jobs: set[str] | None = None  # None: read the whole queue next round
        self._queue_read_at = 0.0
        if self._incremental:
            store.add_listener(self._jobs_changed)
        # The orient and export stages run in a worker process of their own (off the process that serves the API).
        self._own_spec = own_stages_spec(settings.storage.mesh_limits, OWN_STAGE_CONCURRENCY)
        self._exporter = DeviceWorker(
            Device(id="export", kind="cpu", name="pocket3d's own stages", memory_total=0), budget_mb=0.0,
            env=worker_env, warm=[(adapter_path(OwnStages), self._own_spec)], on_progress=self._on_progress,
            on_result=self._on_result, on_crash=self._on_export_crash, cpu_nice=settings.gpu.cpu_worker_nice)

    # -- lifecycle ------------------------------------------------------------------------------------------

    def start(self) -> None:
        if self.sole_node:  # the only node on its store (embedded): whatever it left running, it lost
            lost = transitions.recover_lost_stages(self.store, now=self.clock(), release=self.release,
                                                   all_running=True,
                                                   max_interruptions=self.settings.scheduler.max_interruptions)
            if lost:
                log.warning("recovered %d stage(s) left running by a previous process", len(lost))
        self._hostable = self._models_hostable_here()
        by_model: dict[str, list[float]] = {}
        for (key, quality), seconds in self.store.recent_stage_seconds().items():  # run times outlive a restart
            self._run_times[(key, quality)] = seconds
            by_model.setdefault(key, []).append(seconds)
        for key, seconds in by_model.items():
            self._learned.setdefault(None if key in OWN_STAGES else key, _Learned()).run_seconds = \
                sum(seconds) / len(seconds)
        self._threads = [threading.Thread(target=self._dispatch_loop, name="dispatcher", daemon=True),
                         threading.Thread(target=self._lease_loop, name="lease-keeper", daemon=True)]
        for th in self._threads:
            th.start()
        self._warm_up()

    def drain(self, seconds: float) -> int:
        """Claim nothing more, and wait up to ``seconds`` for the running stages to end; returns how many still
        run (``stop`` gives them back to the queue, for another node)."""
        self._draining = True
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not self._drain_cut.is_set():
            with self._lock:
                left = len(self._running)
            if not left:
                return 0
            log.info("draining: %d stage(s) still running, up to %.0f s more", left, deadline - time.monotonic())
            self._drain_cut.wait(min(5.0, max(0.0, deadline - time.monotonic())))
        with self._lock:
            return len(self._running)

    def stop_draining(self) -> None:
        """End a drain now (a second SIGTERM): what runs goes back to the queue."""
        self._draining = True
        self._drain_cut.set()

    def stop(self, timeout: float = 10.0) -> None:
        """Give running stages back to the queue (their attempt uncounted) and stop the workers."""
        self._stop.set()
        with self._lock:
            running = list(self._running.values())
        for r in running:
            r.stop_reason = r.stop_reason or CANCELLED
            if (worker := self._worker_of(r)) is not None:
                worker.cancel(r.claim.stage.id)
        self.wake()
        deadline = time.monotonic() + timeout
        for r in running:
            r.settled.wait(max(0.0, deadline - time.monotonic() - 2.0))
        for th in self._threads:
            th.join(max(0.0, deadline - time.monotonic()))
        for device_id, worker in [*self._workers.items(), ("export", self._exporter)]:
            # what the worker could not stop in time ends with it; each such stage goes back to the queue
            for stage_id in worker.stop(max(1.0, deadline - time.monotonic())):
                self._resolve(stage_id, CANCELLED, f"the worker for {device_id} stopped")
        for r in running:
            r.settled.wait(max(0.5, deadline - time.monotonic()))
        # Stage tasks not started yet see the stop flag and give their stages back; nothing is dropped unseen.
        self._stages.shutdown(wait=False)
        self._exports.shutdown(wait=False)

    def wake(self) -> None:
        with self._wakeup:
            self._woken = True  # remembered: the dispatcher may be between its round and its wait
            self._wakeup.notify_all()

    # -- warm starts ----------------------------------------------------------------------------------------

    def warming(self) -> list[str]:
        with self._lock:
            return [f"{model_id} on {device_id}" for device_id, model_id in sorted(self._warming)]

    def _warm_up(self) -> None:
        """Start every device's worker (each imports the libraries of the models it may host as it comes up) and
        load the models marked ``preload`` or ``pinned``, in the background, where the policy's
        :func:`preload_placement` puts them; :meth:`warming` names those still on their way."""
        wanted = [m for m in self.registry.all() if (m.spec.preload or m.spec.pinned) and m.adapter_cls is not None
                  and not self.registry.unavailable_reasons(m, self._devices, self.budget_of)]
        profiles = [p for m in wanted if (p := self._profile(m.spec.id)) is not None]
        placement = preload_placement(profiles, self._views())
        with self._lock:
            self._warming = set(placement)
        for device in self._devices:
            models = [m for d, m in placement if d == device.id]
            threading.Thread(target=self._warm_device, args=(device.id, models), name=f"warm-{device.id}",
                             daemon=True).start()
        if self.takes_own_stages:
            threading.Thread(target=self._start_exporter, name="warm-export", daemon=True).start()

    def _start_exporter(self) -> None:
        try:
            self._exporter.start()
        except Exception:
            log.exception("the own-stage worker did not start; the first orient or export stage tries again")

    def _warm_device(self, device_id: str, models: list[str]) -> None:
        try:
            self._worker(device_id)
            for model_id in models:
                self._warm_load(device_id, model_id, "preload")
        except Exception:
            log.exception("warming %s failed; its models load with their first stage", device_id)
        finally:
            with self._lock:
                self._warming -= {(device_id, m) for m in models}

    def _warm_load(self, device_id: str, model_id: str, why: str) -> None:
        """Load a model ahead of any stage (a preload at start, a re-warm after a worker restart). It is booked as
        loading from the start, so the policy neither promises its memory twice nor runs a stage on it early."""
        if self._stop.is_set():
            return
        registered = self.registry.get(model_id)
        device = self._device_by_id[device_id]
        estimate = self._memory_estimate(model_id)
        now = self.clock()
        with self._lock:
            books = self._resident[device_id]
            if model_id in books:
                return  # a stage loaded it meanwhile
            if sum(r.memory_mb for r in books.values()) + estimate > self.budget_of(device):
                log.info("not loading %s on %s (%s): it no longer fits", model_id, device_id, why)
                return
            books[model_id] = _Resident(estimate, now, now, loading=True)
        log.info("loading %s on %s (%s)", model_id, device_id, why)
        try:
            loaded = self._worker(device_id).load(model_id, adapter_path(registered.adapter_cls), registered.spec,
                                                  timeout=self.settings.scheduler.load_timeout)
        except Exception as e:  # a worker that will not start: the model loads with its first stage instead
            loaded = None
            log.warning("loading %s on %s (%s) failed: %s", model_id, device_id, why, e)
        with self._lock:
            entry = self._resident[device_id].get(model_id)
            if loaded is not None and loaded.ok and entry is not None:
                entry.loading = False
                entry.memory_mb = max(entry.memory_mb, loaded.memory_mb or 0.0)
                entry.loaded_at = entry.last_used = self.clock()
            elif entry is not None and entry.loading and entry.running == 0:
                del self._resident[device_id][model_id]  # failed, or a crash took it: nothing is there
        if loaded is not None and loaded.ok and loaded.seconds:
            self._learn_load(model_id, loaded.seconds, loaded.memory_mb)
        elif loaded is not None and not loaded.ok:
            log.warning("loading %s on %s (%s) failed: %s", model_id, device_id, why, loaded.message)
        self.wake()

    def cancel(self, job_id: str) -> None:
        with self._lock:
            running = [r for r in self._running.values() if r.claim.stage.job_id == job_id]
        for r in running:
            self._ask_to_stop(r, CANCELLED)

    # -- the cluster ----------------------------------------------------------------------------------------

    @property
    def draining(self) -> bool:
        return self._draining

    @property
    def takes_own_stages(self) -> bool:
        """Whether this node runs pocket3d's own stages (orient, export): CPU work, so a node with a CPU device
        (every embedded node does; a GPU-only worker of a cluster leaves them to the CPU workers)."""
        return self.sole_node or any(d.kind == "cpu" for d in self._devices)

    def _models_hostable_here(self) -> set[str] | None:
        """A cluster's worker claims only stages of models it can run: its registry's (POCKET3D_MODELS_FILE),
        with their packages and weights here and a device they fit. None for the sole node: it takes any stage
        (one it cannot run fails, saying why)."""
        if self.sole_node:
            return None
        hostable = {m.spec.id for m in self.registry.all()
                    if m.adapter_cls is not None and not self.registry.unavailable_reasons(m, self._devices,
                                                                                           self._static_budget)}
        log.info("this worker takes stages of %d model(s): %s%s", len(hostable), ", ".join(sorted(hostable)),
                 " and pocket3d's own stages (orient, export)" if self.takes_own_stages else "")
        return hostable

    def cluster_state(self) -> dict:
        """What this node's heartbeat tells the cluster (``jobs.nodes``): devices, the models it can host with
        what it measured of them, whether it takes pocket3d's own stages."""
        with self._lock:
            devices = []
            for d in self._devices:
                books = self._resident[d.id]
                running = [sid for sid, r in self._running.items() if r.device_id == d.id]
                devices.append({
                    "id": d.id, "kind": d.kind, "name": d.name, "virtual": d.virtual, "memory_total": d.memory_total,
                    "budget_mb": round(self._static_budget(d)), "used_mb": round(sum(r.memory_mb for r in
                                                                                    books.values())),
                    "slots": 1 if d.kind == "cuda" else self.settings.scheduler.concurrency,
                    "running": len(running), "stages": running,
                    "resident": {m: {"running": r.running, "loading": r.loading} for m, r in books.items()}})
            models = {}
            for model_id in sorted(self._hostable or ()):
                learned = self._learned.get(model_id, _Learned())
                spec = self.registry.get(model_id).spec
                models[model_id] = {"run_seconds": learned.run_seconds, "load_seconds": learned.load_seconds,
                                    "peak_mb": learned.peak_mb, "max_concurrent": spec.max_concurrent,
                                    "kinds": list(spec.devices)}
            own = self._learned.get(None)
        return {"devices": devices, "models": models, "exports": self.takes_own_stages,
                "export_seconds": own.run_seconds if own else None}

    # -- views ----------------------------------------------------------------------------------------------

    @property
    def device_list(self) -> list[Device]:
        return self._devices

    def devices(self) -> list[DeviceState]:
        with self._lock:
            out = []
            for d in self._devices:
                running = [sid for sid, r in self._running.items() if r.device_id == d.id]
                worker = self._workers.get(d.id)
                out.append(DeviceState(d, sorted(self._resident[d.id]), running,
                                       memory_used=sum(m.memory_mb for m in self._resident[d.id].values()),
                                       budget=self.budget_of(d), worker_pid=worker.pid if worker else None,
                                       loading_models=sorted(m for m, r in self._resident[d.id].items()
                                                             if r.loading)))
            return out

    def measured(self, model_id: str) -> Measured:
        with self._lock:
            learned = self._learned.get(model_id)
        if learned is None:
            return Measured()
        return Measured(learned.peak_mb, learned.load_seconds, learned.run_seconds)

    def readings(self) -> dict[str, inventory.DeviceReading]:
        return {d.id: inventory.read(d) for d in self._devices}

    def estimate(self, job: JobRecord) -> Estimate:
        if job.status.is_final:
            return Estimate(None, None)
        cached = self._estimates.get(job.id)
        now = self.clock()
        if cached is not None and cached[0] == job.version and now - cached[1] < 1.0:
            return cached[2]
        estimate = self._estimate(job)
        if len(self._estimates) > 4096:
            self._estimates.clear()
        self._estimates[job.id] = (job.version, now, estimate)
        return estimate

    def _estimate(self, job: JobRecord) -> Estimate:
        """Queue position from the policy's own order; the ETA from the models' measured times: the work ranked
        ahead and what is left of the stages running, spread over the stage slots of the devices that can run
        this job's waiting model, plus this job's own remaining stages."""
        waiting = next((s for s in job.stages if s.status == StageStatus.QUEUED), None)
        with self._lock:
            place = self._queue.get(waiting.id) if waiting is not None else None
            if place is None and waiting is not None:
                # queued since the last pass: behind every stage waiting then, until the next pass ranks it
                place = self._queue_tail
        position, seconds_ahead = place if place is not None else (None, 0.0)
        remaining = [s for s in job.stages if s.status in (StageStatus.PENDING, StageStatus.QUEUED,
                                                           StageStatus.RUNNING)]
        quality = _quality(job.request)
        with self._lock:
            times = [self._run_times.get((_run_key(s.model_id, s.name), quality)) for s in remaining]
        if any(t is None for t in times):
            # no evidence yet for some model at this quality: better no number than a guess
            return Estimate(position, None)
        eta = 0.0
        for s, seconds in zip(remaining, times, strict=True):
            eta += seconds * (1.0 - s.progress) if s.status == StageStatus.RUNNING else seconds
        if position is not None and waiting is not None and waiting.model_id is not None:
            profile = self._profile(waiting.model_id)
            kinds = profile.device_kinds if profile else ("cpu", "cuda")
            now = self.clock()
            with self._lock:
                left = [max(0.0, (self._run_times.get(r.run_key) or self._run_seconds(r.model_id))
                            - (now - r.started)) for r in self._running.values() if r.device_id is not None]
            work = seconds_ahead + sum(left)
            slots = sum(1 if d.kind == "cuda" else self.settings.scheduler.concurrency
                        for d in self._devices if d.kind in kinds)
            eta += work / max(1, slots)
        return Estimate(position, round(eta, 1))

    # -- what the policy sees -------------------------------------------------------------------------------

    def _static_budget(self, device: Device) -> float:
        """The budget without other tenants: what the device could offer once they leave."""
        return inventory.budget_mb(device, self.settings.gpu)

    def budget_of(self, device: Device) -> float:
        """On a GPU, what another process holds there is not ours to promise: the budget follows NVML's free
        memory (read at most every READING_TTL seconds) plus what our own models hold."""
        if device.kind != "cuda":
            return inventory.budget_mb(device, self.settings.gpu)
        now = time.monotonic()
        at, reading = self._readings.get(device.id, (0.0, None))
        if reading is None or now - at > READING_TTL:
            reading = inventory.read(device)
            self._readings[device.id] = (now, reading)
        with self._lock:
            own = sum(r.memory_mb for r in self._resident[device.id].values())
        return inventory.budget_mb(device, self.settings.gpu, reading, own)

    def _run_seconds(self, model_id: str | None) -> float:
        learned = self._learned.get(model_id)
        return learned.run_seconds if learned and learned.run_seconds else DEFAULT_RUN_SECONDS

    def _profile(self, model_id: str) -> ModelProfile | None:
        try:
            registered = self.registry.get(model_id)
        except Exception:
            return None
        spec = registered.spec
        learned = self._learned.get(model_id, _Learned())
        declared = float(spec.vram_requirement)
        if not declared and "cpu" in spec.devices:  # a guess, so never one that keeps it off every CPU device
            declared = min([CPU_MODEL_MB] + [self.budget_of(d) for d in self._devices if d.kind == "cpu"])
        memory = declared if learned.peak_mb is None else max(learned.peak_mb * MEASURED_MARGIN, 1.0)
        # One unusually large input must not price the model off the node: the estimate stays within the largest
        # device it can use (the device's own memory limit is the backstop, as an OUT_OF_MEMORY and a retry).
        static = [self._static_budget(d) for d in self._devices if d.kind in spec.devices]
        if static and learned.peak_mb is not None:
            memory = min(memory, max(max(static), declared))
        return ModelProfile(id=model_id, memory_mb=float(memory),
                            load_seconds=learned.load_seconds or DEFAULT_LOAD_SECONDS,
                            run_seconds=learned.run_seconds or DEFAULT_RUN_SECONDS,
                            max_concurrent=spec.max_concurrent, pinned=spec.pinned, device_kinds=spec.devices)

    def _views(self) -> list[DeviceView]:
        with self._lock:
            starts: dict[tuple[str, str], list[float]] = {}
            for r in self._running.values():
                if r.device_id is not None and r.model_id is not None:
                    starts.setdefault((r.device_id, r.model_id), []).append(r.started)
            # A GPU computes one stage at a time (models there are compute bound); a CPU device as many as
            # scheduler.concurrency.
            cpu_slots = self.settings.scheduler.concurrency
            return [DeviceView(id=d.id, kind=d.kind, budget_mb=self.budget_of(d),
                               slots=1 if d.kind == "cuda" else cpu_slots,
                               resident={m: ResidentModel(model_id=m, memory_mb=r.memory_mb, running=r.running,
                                                          last_used=r.last_used, loaded_at=r.loaded_at,
                                                          loading=r.loading,
                                                          running_since=tuple(starts.get((d.id, m), ())))
                                         for m, r in self._resident[d.id].items()})
                    for d in self._devices]

    # -- the dispatcher -------------------------------------------------------------------------------------

    def _dispatch_loop(self) -> None:
        while not self._stop.is_set():
            began = time.monotonic()
            try:
                if time.monotonic() >= self._storage_pause_until:
                    self._dispatch_once()
            except Exception as e:
                if not self._storage_failed(e, "dispatching"):
                    log.exception("dispatching failed; retrying")
            # Wakes that come during the round or the pause after it are served by one more round, not one each; a
            # long queue makes rounds longer and rarer (a pause as long as the round, up to MAX_DISPATCH_PAUSE), so
            # planning takes at most about half of the process under a burst of submissions.
            spent = time.monotonic() - began
            self._stop.wait(min(MAX_DISPATCH_PAUSE, max(DISPATCH_INTERVAL - spent, spent)))
            with self._wakeup:
                if not self._woken:
                    self._wakeup.wait(timeout=0.5)
                self._woken = False

    def _jobs_changed(self, job_ids: set[str]) -> None:
        """The store's after-commit notice (in the committing thread: keep it short)."""
        with self._lock:
            if self._changed_jobs is not None:
                self._changed_jobs |= job_ids

    def _read_queue(self) -> tuple[list[QueuedStage], list[QueuedStage]] | None:
        """Bring the queue view up to date: the whole queue (None), or (incremental) only the jobs changed since
        the last round, as (stages no longer queued as they were, stages queued now)."""
        now = time.monotonic()
        with self._lock:
            changed = self._changed_jobs
            whole = (not self._incremental or changed is None or len(changed) > 500
                     or now - self._queue_read_at > QUEUE_RESYNC_SECONDS)
            self._changed_jobs = set()  # notices from here on are for the next round
        if whole:
            queued: dict[str, list[QueuedStage]] = {}
            for q in self.store.queued_stages():
                queued.setdefault(q.job_id, []).append(q)
            self._queued, self._queue_read_at = queued, now
            return None
        gone: list[QueuedStage] = []
        came: list[QueuedStage] = []
        if changed:
            for job_id in changed:
                gone.extend(self._queued.pop(job_id, ()))
            for q in self.store.queued_stages(job_ids=changed):
                self._queued.setdefault(q.job_id, []).append(q)
                came.append(q)
        return gone, came

    def _update_pending(self, changes: tuple[list[QueuedStage], list[QueuedStage]] | None, now: float) -> None:
        if changes is None:
            seen = self._pending
            self._pending, self._own_queued, self._fresh = {}, {}, {}
            self._pending_models, self._later_models, self._under_way = Counter(), Counter(), set()
            self._ranked_at = float("-inf")
            for stages in self._queued.values():
                for q in stages:
                    self._admit(q, seen.get(q.stage_id), now)
            return
        gone, came = changes
        seen = {}
        for q in gone:
            self._own_queued.pop(q.stage_id, None)
            self._fresh.pop(q.stage_id, None)
            self._under_way.discard(q.stage_id)
            p = self._pending.pop(q.stage_id, None)
            if p is not None:
                seen[q.stage_id] = p
                self._pending_models[p.model_id] -= 1
                self._later_models.subtract(p.later)
        for q in came:
            self._admit(q, seen.get(q.stage_id), now)
        self._pending_models += Counter()  # drops the models counted down to zero
        self._later_models += Counter()

    def _admit(self, q: QueuedStage, seen: PendingStage | None, now: float) -> None:
        if q.model_id is None:
            self._own_queued[q.stage_id] = q
            return
        if self._hostable is not None and q.model_id not in self._hostable:
            return
        if seen is None:  # new in the queue: counted in the usage stats once, its record made once
            seen = PendingStage(stage_id=q.stage_id, job_id=q.job_id, model_id=q.model_id, feature=q.feature,
                                priority=q.priority, submitted_at=q.submitted_at, ready_at=q.queued_at,
                                later=tuple(m for m in q.later if m is not None))
            self.stats.record_request(q.model_id, now)
        self._pending[q.stage_id] = seen
        self._fresh[q.stage_id] = seen
        self._pending_models[seen.model_id] += 1
        self._later_models.update(seen.later)
        if q.index > 0:
            self._under_way.add(q.stage_id)

    def _dispatch_once(self) -> None:
        if self._draining:
            return
        try:
            changes = self._read_queue()
        except BaseException:
            with self._lock:
                self._changed_jobs = None  # what changed was not read: read it all next time
            raise
        now = self.clock()
        self._update_pending(changes, now)
        with self._lock:
            # Requeued by another node while it still runs here (its lease ran out while this node was cut off from
            # the store): it is claimed again once that run has ended, not beside it on the same device.
            still_here = set(self._running)
        if self.takes_own_stages and self._own_queued:
            for q in sorted((q for q in self._own_queued.values() if q.stage_id not in still_here),
                            key=lambda q: (q.queued_at, q.stage_id)):
                self._start_own(q)
        profiles: dict[str, ModelProfile] = {}
        with self._lock:
            # running and resident models need a profile: their copies' concurrency, and eviction
            known = {r.model_id for r in self._running.values() if r.model_id}
            known |= {m for device_models in self._resident.values() for m in device_models}
        for model_id in {*self._pending_models, *self._later_models, *known}:
            if (profile := self._profile(model_id)) is not None:
                profiles[model_id] = profile
        # a model no longer registered: its stages are left queued, visible as waiting
        usable = {m for m in self._pending_models if m in profiles}
        too_large = {m for m in usable if not self._fits_somewhere(profiles[m])}
        if too_large:
            for p in list(self._pending.values()):
                if p.model_id in too_large and self.sole_node:  # a cluster's worker leaves it to a larger node
                    self._fail_too_large(p, profiles[p.model_id])
            usable -= too_large
        still_pending = still_here & self._pending.keys()
        if (self.peers is None and not still_pending and len(self._pending) > LONG_QUEUE
                and time.monotonic() - self._ranked_at < RANK_INTERVAL
                and (key := self.policy.ordering.sort_key(now, profiles)) is not None):
            self._plan_from_ranking(key, usable, profiles, now)
        else:
            self._plan_whole(usable, still_pending, profiles, now)
        if self.policy.unload_idle:
            for device_id, model_id in idle_unloads(self._views(), profiles, now,
                                                    self.settings.scheduler.model_idle_timeout):
                self._stages.submit(self._unload, device_id, model_id, "idle")

    def _plan_whole(self, usable: set[str], still_pending: set[int], profiles: dict[str, ModelProfile],
                    now: float) -> None:
        """Rank every waiting stage, start what the free slots take, and publish the places of the rest."""
        pending = [p for p in self._pending.values() if p.model_id in usable and p.stage_id not in still_pending]
        ordered = self.policy.ordering.order(pending, now, profiles)
        self._ranking, self._ranked_at, self._fresh = ordered, time.monotonic(), {}
        runnable, ranked = pending, ordered
        if self.peers is not None:  # a stage another worker can start on its loaded model is left to it a while
            with self._lock:
                loaded_here = {m for device_models in self._resident.values() for m in device_models}
            runnable = [p for p in pending if p.model_id in loaded_here or not self.peers.leave_to_others(p, now)]
            if len(runnable) < len(pending):
                kept = {p.stage_id for p in runnable}
                ranked = [p for p in ordered if p.stage_id in kept]
        started = self._start(plan(runnable, self._views(), profiles, self.stats, now, self.policy, ranked=ranked),
                              profiles)
        # queue positions: the places of the stages still waiting after this round
        queue, tail = queue_places((p for p in ordered if p.stage_id not in started),
                                   lambda model_id: profiles[model_id].run_seconds, under_way=self._under_way)
        with self._lock:
            self._queue, self._queue_tail = queue, tail

    def _plan_from_ranking(self, key: Callable[[PendingStage], object], usable: set[str],
                           profiles: dict[str, ModelProfile], now: float) -> None:
        """A round between two whole ones on a long queue: the top of the last ranking, still waiting, with the
        stages queued since merged in. Places keep the last whole round's figures until the next one."""
        top: list[PendingStage] = []
        for p in self._ranking:
            if self._pending.get(p.stage_id) is p and p.stage_id not in self._fresh and p.model_id in usable:
                top.append(p)
                if len(top) >= PLAN_WINDOW:
                    break
        fresh = heapq.nsmallest(PLAN_WINDOW, (p for p in self._fresh.values() if p.model_id in usable), key=key)
        ranked = list(heapq.merge(top, fresh, key=key))
        counts = {m: n for m, n in self._pending_models.items() if m in usable}
        self._start(plan((), self._views(), profiles, self.stats, now, self.policy, ranked=ranked,
                         pending_by_model=counts), profiles)

    def _start(self, assignments: list[Assignment], profiles: dict[str, ModelProfile]) -> set[int]:
        started = set()
        for assignment in assignments:
            if self._start_stage(assignment, profiles[assignment.stage.model_id]):
                started.add(assignment.stage.stage_id)
        return started

    def _fits_somewhere(self, profile: ModelProfile) -> bool:
        budgets = [self._static_budget(d) for d in self._devices if d.kind in profile.device_kinds]
        return bool(budgets) and profile.memory_mb <= max(budgets)

    def _fail_too_large(self, stage: PendingStage, profile: ModelProfile) -> None:
        """A stage whose model needs more memory than any device here offers would wait for ever: fail it now,
        saying how much it needs (its estimate grows with what was measured, so a model can outgrow the node)."""
        budgets = [self._static_budget(d) for d in self._devices if d.kind in profile.device_kinds]
        claim = transitions.claim_stage(self.store, stage.stage_id, worker_id=self.worker_id,
                                        lease_seconds=self.settings.scheduler.lease_seconds, now=self.clock())
        if claim is not None:
            offered = f"the largest offers {max(budgets):.0f} MB" if budgets else "there is none"
            transitions.fail_stage(self.store, claim, code=ErrorCode.OUT_OF_MEMORY, retry=False,
                                   message=f"model {profile.id} needs about {profile.memory_mb:.0f} MB on a "
                                           f"{'/'.join(profile.device_kinds)} device; {offered} on this node",
                                   release=self.release, now=self.clock())

    def _start_own(self, q: QueuedStage) -> None:
        """An orient or export stage: pocket3d's own work, in this process's pool of two threads."""
        with self._lock:
            exporting = sum(1 for r in self._running.values() if r.device_id is None)
        if exporting >= OWN_STAGE_CONCURRENCY:
            return
        claim = transitions.claim_stage(self.store, q.stage_id, worker_id=self.worker_id,
                                        lease_seconds=self.settings.scheduler.lease_seconds, now=self.clock())
        if claim is None:
            return
        running = _Running(claim, None, None, self.clock() + self.settings.scheduler.job_timeout, self.clock())
        with self._lock:
            self._running[claim.stage.id] = running
        self._exports.submit(self._in_log_context, self._run_own, running)

    def _start_stage(self, a: Assignment, profile: ModelProfile) -> bool:
        """Claim the stage and hand it to a thread that runs it; False when another claimed it first."""
        claim = transitions.claim_stage(self.store, a.stage.stage_id, worker_id=self.worker_id,
                                        lease_seconds=self.settings.scheduler.lease_seconds, now=self.clock(),
                                        device=a.device_id)
        if claim is None:
            return False
        now = self.clock()
        running = _Running(claim, a.device_id, a.stage.model_id, now + self.settings.scheduler.job_timeout, now)
        with self._lock:
            neighbours = [r for r in self._running.values() if r.device_id == a.device_id]
            for r in neighbours:
                r.shared = True
            running.shared = bool(neighbours)
            self._running[claim.stage.id] = running
            resident = self._resident[a.device_id]
            for victim in a.evict:
                resident.pop(victim, None)  # promised away now; the worker unloads it before loading
            entry = resident.get(a.stage.model_id)
            if entry is None:
                entry = resident[a.stage.model_id] = _Resident(profile.memory_mb, now, now, loading=True)
            entry.running += 1
        self._stages.submit(self._in_log_context, self._run_stage, running, a)
        return True

    # -- one stage on a device ------------------------------------------------------------------------------

    @staticmethod
    def _in_log_context(fn: Callable[..., None], running: _Running, *args: object) -> None:
        """Run a stage's task with its job, stage, model and device on every log line it writes."""
        stage = running.claim.stage
        fields = {"job_id": stage.job_id, "stage": stage.name, "model": running.model_id,
                  "device": running.device_id}
        with bound_contextvars(**{k: v for k, v in fields.items() if v is not None}):
            fn(running, *args)

    def _worker(self, device_id: str) -> DeviceWorker:
        with self._lock:
            worker = self._workers.get(device_id)
            if worker is None:
                device = self._device_by_id[device_id]
                worker = DeviceWorker(
                    device, budget_mb=self.budget_of(device), env=self._worker_env, warm=self._hosted_here(device),
                    cpu_nice=self.settings.gpu.cpu_worker_nice, on_progress=self._on_progress,
                    on_result=self._on_result,
                    on_crash=lambda reason, stage_ids, d=device_id: self._on_crash(d, reason, stage_ids))
                self._workers[device_id] = worker
        # Outside the lock: a spawn takes a while, and status reads and callbacks must not wait for it. A no-op
        # while the child runs; after a crash, a fresh child.
        worker.start()
        return worker

    def _hosted_here(self, device: Device) -> list[tuple[str, ModelSpec]]:
        """The models a device may host: its worker imports their libraries when it spawns."""
        return [(adapter_path(m.adapter_cls), m.spec) for m in self.registry.all()
                if m.adapter_cls is not None and not m.static_reasons and device.kind in m.spec.devices]

    def _run_stage(self, running: _Running, a: Assignment) -> None:
        stage, model_id = running.claim.stage, a.stage.model_id
        outcome: tuple[str, str] | None = None
        try:
            if self._stop.is_set():
                outcome = (REQUEUE, "the node is stopping")
                return
            if running.stop_reason is not None:  # cancelled before it began: no evictions, no load
                outcome = self._stopped(running)
                return
            worker = self._worker(a.device_id)
            for victim in a.evict:
                self._unload(a.device_id, victim, "making room")
            registered = self.registry.get(model_id)
            adapter = adapter_path(registered.adapter_cls)
            with self.artifacts.temp_dir(f"stage-{stage.id}-") as work:
                inputs = stage_io.materialize(self.store, self.artifacts, running.claim, work)
                # The load comes last before the hand-over, and is checked against the child that will run the
                # stage: a crash in between would otherwise leave a stage computing on a model the books lost.
                if model_id not in worker.resident:
                    outcome = self._load(running, worker, a.device_id, model_id, adapter, registered.spec)
                    if outcome is not None:
                        return
                else:  # there already (another stage loaded it): the books say so too
                    with self._lock:
                        entry = self._resident[a.device_id].get(model_id)
                        if entry is not None:
                            entry.loading = False
                if running.stop_reason is not None:  # timed out or cancelled while it was prepared
                    outcome = self._stopped(running)
                    return
                try:
                    self._start_clock(running)
                    running.phase = "handed"
                    worker.run(StageRequest(stage_id=stage.id, model_id=model_id, adapter=adapter,
                                            spec=registered.spec, inputs=inputs, params=stage.params,
                                            log_context=_log_context()))
                except WorkerUnavailable as e:
                    outcome = self._stopped(running) if running.stop_reason else (REQUEUE, str(e))
                    return
                running.handed_at = self.clock()
                if running.stop_reason is not None:  # stopped while being handed over: tell the worker now
                    worker.cancel(stage.id)
                result: StageResult = running.done.result()
                outcome = self._finish(running, result, work)
        except Exception as e:
            if self._storage_failed(e, f"job {stage.job_id} stage {stage.index}"):
                outcome = (REQUEUE, f"storage unavailable: {storage_failure(e)}")  # not the stage's doing
            else:
                log.exception("job %s stage %d: the scheduler failed around the model", stage.job_id, stage.index)
                outcome = (ErrorCode.INTERNAL_ERROR, f"{type(e).__name__}: {e}")
        finally:
            self._settle(running, outcome)

    def _load(self, running: _Running, worker: DeviceWorker, device_id: str, model_id: str, adapter: str,
              spec: ModelSpec) -> tuple[str, str] | None:
        """Load the model for this stage; None when it is there, else how the stage ends."""
        started = self.clock()
        load_timeout = self.settings.scheduler.load_timeout
        running.deadline, running.limit = started + load_timeout, "load_timeout"
        running.phase = "loading"
        log.info("loading %s on %s", model_id, device_id)
        # the lease keeper kills a load past the deadline (and knows why); this timeout is a backstop
        loaded = worker.load(model_id, adapter, spec, timeout=load_timeout + 5.0)
        running.phase = "preparing"
        if loaded.ok:
            # Booked before anything else, even for a stage stopped meanwhile: the model is in the worker now.
            # A load beside running stages measures their growth too: its time counts, its memory not.
            measured_mb = None if running.shared else loaded.memory_mb
            if loaded.seconds:  # 0: it was there already (another stage loaded it)
                self._learn_load(model_id, loaded.seconds, measured_mb)
                self.observer.model_loaded(model_id, device_id, loaded.seconds)
            with self._lock:
                entry = self._resident[device_id].get(model_id)
                if entry is None:  # a crash cleared the books meanwhile; the model is in the new child now
                    entry = self._resident[device_id][model_id] = _Resident(
                        measured_mb or self._memory_estimate(model_id), self.clock(), self.clock(), running=1)
                entry.loading = False
                entry.memory_mb = max(entry.memory_mb, measured_mb or 0.0)
        if running.stop_reason is not None:  # timed out or cancelled while loading
            return self._stopped(running)
        if loaded.ok:
            return None
        if loaded.error_code == ErrorCode.WORKER_CRASHED and (not loaded.seconds or running.bystander):
            return REQUEUE, loaded.message  # the worker was down before the load began, or killed for another
        return loaded.error_code or ErrorCode.MODEL_ERROR, loaded.message

    def _lease_lost(self, running: _Running) -> tuple[str, str]:
        """The stage's lease went to another node (this one was paused or cut off past it): its result is dropped,
        nothing is stored, and whatever this node reports of the stage is refused (the lease token fences it)."""
        stage = running.claim.stage
        log.warning("job %s stage %d: this node lost the stage's lease (another node took it over); its result is "
                    "dropped", stage.job_id, stage.index)
        return REQUEUE, "the lease was lost"

    def _stopped(self, running: _Running) -> tuple[str, str]:
        if running.stop_reason == ErrorCode.TIMEOUT:
            return ErrorCode.TIMEOUT, self._timeout_message(running)
        return CANCELLED, ""

    def _start_clock(self, running: _Running) -> None:
        """The run's deadline starts when the stage is handed to its worker: what came before (the worker's start,
        the model's load, fetching the inputs) is not the stage's run, and a load has load_timeout of its own."""
        if running.stop_reason is None:
            running.deadline, running.limit = self.clock() + self.settings.scheduler.job_timeout, "job_timeout"

    def _memory_estimate(self, model_id: str) -> float:
        profile = self._profile(model_id)
        return profile.memory_mb if profile else 0.0

    def _finish(self, running: _Running, result: StageResult, work: Path) -> tuple[str, str] | None:
        """Store a successful stage's outputs; otherwise the (code, message) it failed with."""
        model_id = running.model_id
        if result.peak_memory_mb and not running.shared:
            self._learn_peak(model_id, result.peak_memory_mb)
        if result.error_code is None and running.stop_reason != ErrorCode.TIMEOUT:
            # finished, even if asked to stop meanwhile: complete_stage still honours a cancel of the job
            self._learn_run(model_id, running.run_key, result.seconds)
            self.observer.stage_finished(model_id, running.device_id, result.seconds)
            warnings = [StageWarning(code, message) for code, message in result.warnings]
            last_message = self._unsaved_message(running)
            if not transitions.holds_lease(self.store, running.claim):
                return self._lease_lost(running)
            with self.blob_lock.writing(self.artifacts) as blobs:
                outputs = stage_io.store_outputs(blobs, running.claim, result.files or {}, work)
                if not transitions.complete_stage(self.store, running.claim, outputs, release=self.release,
                                                  now=self.clock(), warnings=warnings, message=last_message):
                    _refused(running.claim.stage, "its completion")
            log.info("job %s stage %d (%s) done on %s in %.2f s", running.claim.stage.job_id,
                     running.claim.stage.index, model_id, running.device_id, result.seconds)
            return None
        if result.error_code == REQUEUE:
            return REQUEUE, result.message
        if running.stop_reason is not None or result.error_code == CANCELLED:
            return self._stopped(running)
        return result.error_code or ErrorCode.MODEL_ERROR, result.message

    def _settle(self, running: _Running, outcome: tuple[str, str] | None) -> None:
        """Book the end of a stage, and tell the store how it ended when it did not succeed."""
        stage = running.claim.stage
        now = self.clock()
        with self._lock:
            self._running.pop(stage.id, None)
            if running.device_id is not None:
                entry = self._resident[running.device_id].get(running.model_id)
                if entry is not None:
                    entry.running = max(0, entry.running - 1)
                    entry.last_used = now
                    if entry.loading and entry.running == 0:  # its load never finished: nothing is there
                        del self._resident[running.device_id][running.model_id]
        try:
            if outcome is not None:
                self._record_failure(running, *outcome)
        except Exception as e:
            # Its lease expires, and it is queued again without an attempt counted (recover_lost_stages).
            if not self._storage_failed(e, f"recording the end of job {stage.job_id} stage {stage.index}"):
                log.exception("job %s stage %d: recording its end failed; its lease will expire", stage.job_id,
                              stage.index)
        finally:
            running.settled.set()
            if outcome is None:
                self._oom_retried.discard(stage.id)
            self._estimates.clear()
            self.wake()

    def _record_failure(self, running: _Running, code: str, message: str) -> None:
        claim, stage = running.claim, running.claim.stage
        now = self.clock()
        if code == ErrorCode.STORAGE_UNAVAILABLE:  # the model's disk writes failed: not the stage's doing
            self._storage_failed(OSError(message), f"job {stage.job_id} stage {stage.index}", known=True)
            code = REQUEUE
        if code == REQUEUE:
            if transitions.requeue_stage(self.store, claim, release=self.release, now=now):
                log.info("job %s stage %d queued again: %s", stage.job_id, stage.index, message)
            else:
                _refused(stage, "giving it back")
            return
        if code == CANCELLED:
            if self._stop.is_set():  # shutting down, not cancelled: the next start runs it again
                transitions.requeue_stage(self.store, claim, release=self.release, now=now)
                log.info("job %s stage %d requeued at shutdown", stage.job_id, stage.index)
            elif not transitions.acknowledge_cancel(self.store, claim, release=self.release, now=now):
                _refused(stage, "its cancellation")
            return
        retry = False
        if code == ErrorCode.OUT_OF_MEMORY and stage.id not in self._oom_retried:
            # evict the device's idle models and try once more, the attempt not counted: the model did not fail,
            # the device was full
            if len(self._oom_retried) > 10_000:
                self._oom_retried.clear()
            self._oom_retried.add(stage.id)
            self._free_device(running.device_id, keep=None)
            log.warning("job %s stage %d ran out of memory; retrying once on a freed device: %s", stage.job_id,
                        stage.index, message)
            transitions.requeue_stage(self.store, claim, release=self.release, now=now)
            return
        if code in (ErrorCode.WORKER_CRASHED, ErrorCode.INTERNAL_ERROR):
            # not the model's fault (a dead process; a full disk around the stage): worth another attempt, and
            # transitions fails the job with this code once max_attempts are used
            retry = True
        log.warning("job %s stage %d: %s: %s%s", stage.job_id, stage.index, code, message,
                    " (tried again while attempts remain)" if retry else "")
        transitions.fail_stage(self.store, claim, code=code, message=message, retry=retry, release=self.release,
                               now=now)

    # -- pocket3d's own stages: orient, export --------------------------------------------------------------

    def _run_own(self, running: _Running) -> None:
        claim = running.claim
        name = claim.stage.name
        outcome: tuple[str, str] | None = None
        try:
            if self._stop.is_set():
                outcome = (REQUEUE, "the node is stopping")
                return
            with self.artifacts.temp_dir(f"stage-{claim.stage.id}-") as work:
                inputs = stage_io.materialize(self.store, self.artifacts, claim, work)
                if running.stop_reason is not None:
                    outcome = self._stopped(running)
                    return
                try:
                    self._exporter.start()  # a no-op while it runs; after a crash, a fresh one
                    self._start_clock(running)
                    running.phase = "handed"
                    self._exporter.run(StageRequest(stage_id=claim.stage.id, model_id=OWN_STAGES_MODEL_ID,
                                                    adapter=adapter_path(OwnStages), spec=self._own_spec,
                                                    inputs=inputs, params={"stage": name,
                                                                           "params": claim.stage.params},
                                                    log_context=_log_context()))
                except WorkerUnavailable as e:
                    outcome = self._stopped(running) if running.stop_reason else (REQUEUE, str(e))
                    return
                running.handed_at = self.clock()
                if running.stop_reason is not None:
                    self._exporter.cancel(claim.stage.id)
                result: StageResult = running.done.result()
                if result.error_code is not None or running.stop_reason == ErrorCode.TIMEOUT:
                    outcome = self._own_failure(running, result)
                    return
                files = dict(result.files or {})
                details_file = files.pop(DETAILS_KEY, None)
                details = json.loads(Path(details_file).read_text()) if details_file is not None else None
                warnings = [StageWarning(code, message) for code, message in result.warnings]
                if not transitions.holds_lease(self.store, claim):
                    outcome = self._lease_lost(running)
                    return
                with self.blob_lock.writing(self.artifacts) as blobs:
                    outputs = stage_io.store_outputs(blobs, claim, files, work)
                    if not transitions.complete_stage(self.store, claim, outputs, release=self.release,
                                                      now=self.clock(), warnings=warnings, details=details):
                        _refused(claim.stage, "its completion")
                self._learn_run(None, running.run_key, self.clock() - running.started)
                self.observer.stage_finished(None, None, self.clock() - running.started)
        except Exception as e:
            if self._storage_failed(e, f"job {claim.stage.job_id}'s {name}"):
                outcome = (REQUEUE, f"storage unavailable: {storage_failure(e)}")
            else:
                log.exception("job %s: the %s stage failed", claim.stage.job_id, name)
                outcome = (ErrorCode.EXPORT_FAILED if name == EXPORT_STAGE else ErrorCode.INTERNAL_ERROR,
                           f"{type(e).__name__}: {e}")
        finally:
            self._settle(running, outcome)

    def _own_failure(self, running: _Running, result: StageResult) -> tuple[str, str]:
        """How an orient or export stage that did not succeed ends: the mesh's fault (INVALID_INPUT, a geometry
        code) as the worker classified it; anything else from the export code is EXPORT_FAILED (orient's:
        INTERNAL_ERROR)."""
        if result.error_code == REQUEUE:
            return REQUEUE, result.message
        if running.stop_reason is not None or result.error_code == CANCELLED:
            return self._stopped(running)
        failed = ErrorCode.EXPORT_FAILED if running.claim.stage.name == EXPORT_STAGE else ErrorCode.INTERNAL_ERROR
        if result.error_code in (None, ErrorCode.MODEL_ERROR):
            return failed, result.message
        return result.error_code, result.message

    def _resolve_crashed(self, stage_ids: list[int], reason: str, killed_by_us: str | None) -> None:
        """The stages of a worker that died: a bystander of a kill pocket3d made to stop another stage goes back to
        the queue uncounted; the rest count an attempt (WORKER_CRASHED)."""
        for stage_id in stage_ids:
            with self._lock:
                running = self._running.get(stage_id)
            if running is not None and killed_by_us is not None and running.stop_reason is None:
                self._resolve(stage_id, REQUEUE, f"{reason} (to stop {killed_by_us})")
            else:
                self._resolve(stage_id, ErrorCode.WORKER_CRASHED, reason)

    def _on_export_crash(self, reason: str, stage_ids: list[int]) -> None:
        """The own-stage worker died: its stages go back to the queue uncounted when pocket3d killed it to stop
        another one, else they count an attempt (WORKER_CRASHED); the next export stage starts a fresh worker."""
        killed_by_us = self._killing.pop("export", None)
        log.error("the own-stage worker crashed: %s", reason)
        self._resolve_crashed(stage_ids, reason, killed_by_us)
        self.wake()

    def _worker_of(self, running: _Running) -> DeviceWorker | None:
        return self._exporter if running.device_id is None else self._workers.get(running.device_id)

    # -- callbacks from the workers (their threads) ---------------------------------------------------------

    def _on_progress(self, stage_id: int, fraction: float, message: str | None) -> None:
        with self._lock:
            running = self._running.get(stage_id)
        if running is None:
            return
        now = self.clock()
        with running.progress_lock:
            if running.unsaved is not None and message is None:
                message = running.unsaved[1]  # a message held back stays the latest until a newer one comes
            if now - running.last_progress_write < PROGRESS_WRITE_INTERVAL and fraction < 1.0:
                running.unsaved = (fraction, message)  # the lease keeper writes it if nothing newer comes
                return
            self._write_progress(running, fraction, message, now)

    def _flush_progress(self, running: _Running, now: float) -> None:
        """Write what the rate limit held back, once the interval has passed with nothing newer."""
        with running.progress_lock:
            if running.unsaved is not None and now - running.last_progress_write >= PROGRESS_WRITE_INTERVAL:
                self._write_progress(running, *running.unsaved, now)

    def _unsaved_message(self, running: _Running) -> str | None:
        """The last message the rate limit held back, for the stage's completion to write."""
        with running.progress_lock:
            unsaved, running.unsaved = running.unsaved, None
            running.last_progress_write = float("inf")  # nothing more is written for this attempt
        return unsaved[1] if unsaved else None

    def _write_progress(self, running: _Running, fraction: float, message: str | None, now: float) -> None:
        """Under the stage's progress lock."""
        running.last_progress_write = now
        running.unsaved = None
        try:
            still_ours = transitions.report_progress(self.store, running.claim, fraction, now, message,
                                                     webhook_interval=self.settings.webhooks.progress_interval)
        except Exception as e:
            if not self._storage_failed(e, "recording progress"):
                log.exception("recording progress failed")
            return
        if not still_ours:  # cancelled, or the lease was lost: stop working on it
            self._ask_to_stop(running, CANCELLED)

    def _resolve(self, stage_id: int, code: str, message: str) -> None:
        """End a stage that the worker will not report on."""
        self._on_result(StageResult(stage_id=stage_id, files=None, error_code=code, message=message,
                                    peak_memory_mb=None, seconds=0.0))

    def _on_result(self, result: StageResult) -> None:
        with self._lock:
            running = self._running.get(result.stage_id)
        if running is not None and not running.done.done():
            running.done.set_result(result)

    def _on_crash(self, device_id: str, reason: str, stage_ids: list[int]) -> None:
        """The worker's child died. Only the stages it was running are lost (those on their way to it find it
        gone and are queued again). When pocket3d killed it, to stop one stage, the others were bystanders:
        they go back to the queue without an attempt counted."""
        killed_by_us = self._killing.pop(device_id, None)
        log.error("device worker crashed: %s", reason)
        if not self._stop.is_set():
            self.observer.worker_restarted(device_id, "killed" if killed_by_us is not None else "crashed")
        lost = set(stage_ids)
        with self._lock:
            # Nothing of the dead child is resident; stages on their way to this device load their model into
            # the next child, and are booked as loading it. What was loaded and idle is loaded again below.
            books = self._resident[device_id]
            rewarm = [m for m, r in books.items() if not r.loading and r.running == 0]
            books.clear()
            for r in self._running.values():
                if r.device_id != device_id or r.claim.stage.id in lost or r.done.done():
                    continue
                if killed_by_us is not None:
                    r.bystander = True
                entry = books.get(r.model_id)
                if entry is None:
                    entry = books[r.model_id] = _Resident(self._memory_estimate(r.model_id), self.clock(),
                                                          self.clock(), loading=True)
                entry.running += 1
        self._resolve_crashed(stage_ids, reason, killed_by_us)
        worker = self._workers.get(device_id)
        if worker is not None and not self._stop.is_set():
            try:
                # start(), not restart(): a stage thread may have started a fresh child already, and restart()
                # would end it with its stages unreported
                worker.start()
            except Exception:
                log.exception("restarting the worker for %s failed", device_id)
            else:
                for model_id in rewarm:
                    self._stages.submit(self._warm_load, device_id, model_id, "re-warming after a worker restart")
        self.wake()

    # -- memory ---------------------------------------------------------------------------------------------

    def _unload(self, device_id: str, model_id: str, why: str) -> None:
        worker = self._workers.get(device_id)
        with self._lock:
            entry = self._resident[device_id].get(model_id)
            if entry is not None and entry.running > 0:
                return  # it got work since the decision
            if (device_id, model_id) in self._unloading:
                return  # the dispatcher asks again every round until it is gone
            self._resident[device_id].pop(model_id, None)
            self._unloading.add((device_id, model_id))
        try:
            self._unload_from(worker, device_id, model_id, why)
        finally:
            with self._lock:
                self._unloading.discard((device_id, model_id))
            self.wake()

    def _unload_from(self, worker: DeviceWorker | None, device_id: str, model_id: str, why: str) -> None:
        if worker is not None and model_id in worker.resident:
            log.info("unloading %s from %s (%s)", model_id, device_id, why)
            result = worker.unload(model_id)
            if result.restarted:
                self.observer.worker_restarted(device_id, "memory_retained")
            if result.ok or model_id not in worker.resident:
                self.observer.model_unloaded(model_id, device_id, UNLOAD_REASONS.get(why, "other"))
            if not result.ok and model_id in worker.resident:
                # still there (a stage of it the books had missed): count it again rather than promise its memory
                log.warning("unloading %s from %s failed: %s", model_id, device_id, result.message)
                with self._lock:
                    self._resident[device_id].setdefault(model_id, _Resident(
                        result.expected_mb or self._memory_estimate(model_id), self.clock(), self.clock()))
            elif result.retained_mb > 0.25 * max(result.expected_mb, 1.0) and not result.restarted:
                log.warning("unloading %s from %s returned %.0f of %.0f MB; the rest comes back when the worker "
                            "restarts (it does once it holds nothing)", model_id, device_id, result.returned_mb,
                            result.expected_mb)

    def _free_device(self, device_id: str | None, keep: str | None) -> None:
        """Evict every idle model on the device (after an out-of-memory error, before the retry)."""
        if device_id is None:
            return
        with self._lock:
            idle = [m for m, r in self._resident[device_id].items() if r.running == 0 and m != keep]
        for model_id in idle:
            self._unload(device_id, model_id, "out of memory on the device")

    def _learn_load(self, model_id: str, seconds: float, memory_mb: float | None) -> None:
        with self._lock:
            learned = self._learned.setdefault(model_id, _Learned())
            learned.load_seconds = seconds
            if memory_mb:
                learned.peak_mb = max(learned.peak_mb or 0.0, memory_mb)

    def _learn_peak(self, model_id: str | None, peak_mb: float) -> None:
        if model_id is None:
            return
        with self._lock:
            learned = self._learned.setdefault(model_id, _Learned())
            learned.peak_mb = max(learned.peak_mb or 0.0, peak_mb)

    def _learn_run(self, model_id: str | None, run_key: tuple[str, str], seconds: float) -> None:
        """A stage's run time, for its model (``None``: pocket3d's own stages) and for its model at its quality."""
        with self._lock:
            learned = self._learned.setdefault(model_id, _Learned())
            learned.run_seconds = _moving(learned.run_seconds, seconds)
            self._run_times[run_key] = _moving(self._run_times.get(run_key), seconds)

    # -- leases, timeouts, stuck cancels --------------------------------------------------------------------

    def _ask_to_stop(self, running: _Running, reason: str) -> None:
        if running.stop_reason is None:
            running.stop_reason = reason
            running.stop_asked_at = self.clock()
        worker = self._worker_of(running)
        if worker is not None:
            worker.cancel(running.claim.stage.id)

    def _lease_loop(self) -> None:
        lease = self.settings.scheduler.lease_seconds
        while not self._stop.wait(min(1.0, lease / 3)):
            try:
                now = self.clock()
                with self._lock:
                    running = list(self._running.values())
                for r in running:
                    if r.done.done():  # finished; being stored
                        continue
                    if r.unsaved is not None:
                        self._flush_progress(r, now)
                    if now > r.deadline and not r.killed:
                        # a cancelled stage past its deadline is stuck too; it still ends as cancelled
                        r.stop_reason = r.stop_reason or ErrorCode.TIMEOUT
                        if r.phase in ("loading", "handed"):  # else its thread sees the flag before hand-over
                            r.killed = self._kill_for(r, f"stage {r.claim.stage.id} ran past "
                                                         f"scheduler.{r.limit}")
                    elif (r.stop_reason == CANCELLED and r.stop_asked_at is not None and r.handed_at is not None
                          and now - max(r.stop_asked_at, r.handed_at) > self.settings.scheduler.cancel_grace):
                        self._kill_for(r, f"stage {r.claim.stage.id} did not stop within "
                                          f"{self.settings.scheduler.cancel_grace:g} s of its cancel")
                        r.stop_asked_at = None
                for stage_id in transitions.renew_leases(self.store, [r.claim for r in running],
                                                         lease_seconds=lease, now=now):
                    r = next(r for r in running if r.claim.stage.id == stage_id)
                    if not r.done.done():  # lost its lease (this node was paused past it) or its job was cancelled
                        self._ask_to_stop(r, CANCELLED)
                transitions.recover_lost_stages(self.store, now=now, release=self.release,
                                                max_interruptions=self.settings.scheduler.max_interruptions)
            except Exception as e:
                if not self._storage_failed(e, "lease keeping"):
                    log.exception("lease keeping failed; retrying")

    def _storage_failed(self, error: BaseException, where: str, *, known: bool = False) -> bool:
        """When ``error`` is the disk or the store refusing a write: one line in the log (no traceback), readiness
        told, and no new stage claimed for STORAGE_PAUSE seconds. False for any other error."""
        reason = str(error) if known else storage_failure(error)
        if reason is None:
            return False
        now = time.monotonic()
        if now - self._storage_logged.get(where, -1e9) > 10.0:  # a loop that keeps failing says so every 10 s
            self._storage_logged[where] = now
            log.warning("%s: storage unavailable: %s; no new stages for %g s", where, reason, STORAGE_PAUSE)
        if len(self._storage_logged) > 1000:
            self._storage_logged.clear()
        self._storage_pause_until = now + STORAGE_PAUSE
        self._on_storage_failure(reason)
        return True

    def _kill_for(self, running: _Running, why: str) -> bool:
        """Stop a stage that will not stop: kill its worker (a hung model, or an export stuck in a library, cannot
        be interrupted otherwise), if the stage is in it or loading into it. True when a worker was killed."""
        worker = self._worker_of(running)
        if worker is None or not worker.alive:
            return False
        if running.phase != "loading" and running.claim.stage.id not in worker.running:
            return False  # not (or no longer) in this child: killing it would only hurt the others
        name = running.device_id or "export"
        log.warning("killing the worker of %s: %s", name, why)
        self._killing[name] = f"stage {running.claim.stage.id}"
        worker.kill(why)
        return True

    def _timeout_message(self, running: _Running) -> str:
        if running.limit == "load_timeout":
            return (f"the model's load took longer than scheduler.load_timeout "
                    f"({self.settings.scheduler.load_timeout} s)")
        return f"the stage ran longer than scheduler.job_timeout ({self.settings.scheduler.job_timeout} s)"


def _quality(request: dict) -> str:
    return str(request.get("quality") or "medium")


def _run_key(model_id: str | None, stage_name: str) -> str:
    """What a stage's run time is learned under: its model, or the name of one of pocket3d's own stages."""
    return model_id if model_id is not None else stage_name


def _moving(mean: float | None, sample: float) -> float:
    return sample if mean is None else 0.7 * mean + 0.3 * sample


def _refused(stage: StageRecord, what: str) -> None:
    log.warning("job %s stage %d: %s was refused: the stage's lease is no longer this node's (another node took it "
                "over, or its job ended)", stage.job_id, stage.index, what)


def adapter_path(cls: type) -> str:
    """How the worker process finds an adapter class: ``package.module:Class``."""
    return f"{cls.__module__}:{cls.__qualname__}"


def _log_context() -> dict[str, str]:
    """What this thread's log lines are bound to (job, stage, model), for the worker's lines about the stage; the
    worker names its device itself."""
    return {k: str(v) for k, v in get_contextvars().items() if k != "device"}
