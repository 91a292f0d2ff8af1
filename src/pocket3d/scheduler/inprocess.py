"""The in-process executor: worker threads that claim stages from the store and run them in this process.

It keeps the contract the VRAM-aware scheduler will keep: claim only stages whose model can be hosted now
(``max_concurrent`` per model), hold each under a renewed lease, write outputs as artifacts, and report every
outcome through :mod:`pocket3d.jobs.transitions`. It does not isolate a crashing model; device worker
processes do, in the scheduler that replaces this one.
"""

from __future__ import annotations

import logging
import mimetypes
import os
import shutil
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pocket3d import geometry
from pocket3d.config import Settings
from pocket3d.errors import ErrorCode
from pocket3d.jobs import transitions
from pocket3d.jobs.records import EXPORT_STAGE, ClaimedStage, JobRecord, OutputRecord, StageStatus
from pocket3d.jobs.store import Store
from pocket3d.models.registry import Registry
from pocket3d.models.spec import Device, InputRejected, ModelAdapter, RunInputs, StageCancelled
from pocket3d.scheduler.base import DeviceState, Estimate, Scheduler
from pocket3d.scheduler.devices import discover
from pocket3d.storage.artifacts import LocalArtifactStore

log = logging.getLogger(__name__)

Clock = Callable[[], float]


class StageTimeout(Exception):
    pass


CANCELLED = "CANCELLED"  # _attempt's outcome for a stopped stage; not an error code a job ends with


class ProgressReporter:
    """The ``progress`` callback handed to an adapter: records progress, and stops a cancelled stage."""

    MIN_INTERVAL = 0.2  # seconds between progress writes; reports in between only check for cancellation

    def __init__(self, store: Store, claim: ClaimedStage, cancelled: threading.Event, timeout: float, clock: Clock):
        self._store, self._claim, self._cancelled, self._clock = store, claim, cancelled, clock
        self._started = clock()
        self._deadline = self._started + timeout
        self._last_write = 0.0

    def __call__(self, fraction: float, message: str | None = None) -> None:
        self.check()
        now = self._clock()
        if now - self._last_write >= self.MIN_INTERVAL or fraction >= 1.0:
            self._last_write = now
            if not transitions.report_progress(self._store, self._claim, fraction, now):
                raise StageCancelled()

    def check(self) -> None:
        if self._cancelled.is_set():
            raise StageCancelled()
        if self._clock() > self._deadline:
            raise StageTimeout()


@dataclass
class _Running:
    claim: ClaimedStage
    cancelled: threading.Event
    deadline: float


class InProcessScheduler(Scheduler):
    def __init__(self, *, settings: Settings, store: Store, artifacts: LocalArtifactStore, registry: Registry,
                 blob_lock: threading.RLock, release: transitions.ReleasePolicy, clock: Clock = time.time):
        self.settings, self.store, self.artifacts, self.registry = settings, store, artifacts, registry
        self.blob_lock, self.release, self.clock = blob_lock, release, clock
        self.worker_id = f"{socket.gethostname()[:40]}-{os.getpid()}-{id(self) & 0xFFFF:04x}"
        self._devices = discover(settings.gpu)
        self._stop = threading.Event()
        self._wakeup = threading.Condition()
        self._claim_lock = threading.Lock()
        self._inflight: dict[str, int] = {}
        self._adapters: dict[str, ModelAdapter] = {}
        self._adapter_locks: dict[str, threading.Lock] = {}
        self._running: dict[int, _Running] = {}
        self._threads: list[threading.Thread] = []
        self._stage_seconds: tuple[float, dict[str | None, float]] = (0.0, {})
        self._estimates: dict[str, tuple[int, float, Estimate]] = {}

    # -- lifecycle ------------------------------------------------------------------------------------------

    def start(self) -> None:
        # This node is the only one on its store (embedded mode): whatever it left running, it lost.
        lost = transitions.recover_lost_stages(self.store, now=self.clock(), release=self.release, all_running=True)
        if lost:
            log.warning("recovered %d stage(s) left running by a previous process", len(lost))
        n = self.settings.scheduler.concurrency
        self._threads = [threading.Thread(target=self._worker_loop, name=f"stage-worker-{i}", daemon=True)
                         for i in range(n)]
        self._threads.append(threading.Thread(target=self._lease_loop, name="lease-keeper", daemon=True))
        for th in self._threads:
            th.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        for running in list(self._running.values()):
            running.cancelled.set()  # running stages stop at their next report and go back to the queue
        self.wake()
        deadline = time.monotonic() + timeout
        for th in self._threads:
            th.join(max(0.0, deadline - time.monotonic()))
        for model_id, adapter in list(self._adapters.items()):
            try:
                adapter.unload()
            except Exception:
                log.exception("unloading %s failed", model_id)
        self._adapters.clear()

    def wake(self) -> None:
        with self._wakeup:
            self._wakeup.notify_all()

    def cancel(self, job_id: str) -> None:
        for running in list(self._running.values()):
            if running.claim.stage.job_id == job_id:
                running.cancelled.set()

    # -- views ----------------------------------------------------------------------------------------------

    def estimate(self, job: JobRecord) -> Estimate:
        if job.status.is_final:
            return Estimate(None, None)
        # An estimate is a guess anyway: one a second per job version is plenty, and polling stays cheap.
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
        position = self.store.queue_position(job)
        seconds = self._mean_stage_seconds()
        remaining = [s for s in job.stages if s.status in (StageStatus.PENDING, StageStatus.QUEUED,
                                                           StageStatus.RUNNING)]
        if any(s.model_id not in seconds for s in remaining):
            return Estimate(position, None)  # no evidence yet for some model: better no number than a guess
        eta = 0.0
        for s in remaining:
            run = seconds[s.model_id]
            eta += run * (1.0 - s.progress) if s.status == StageStatus.RUNNING else run
        if position:
            eta += (position - 1) * seconds[remaining[0].model_id] / self.settings.scheduler.concurrency
        return Estimate(position, round(eta, 1))

    def devices(self) -> list[DeviceState]:
        running = list(self._running)
        return [DeviceState(d, sorted(self._adapters), running) for d in self._devices]

    @property
    def device_list(self) -> list[Device]:
        return self._devices

    def _mean_stage_seconds(self) -> dict[str | None, float]:
        at, cached = self._stage_seconds
        if self.clock() - at > 5.0:
            cached = self.store.recent_stage_seconds()
            self._stage_seconds = (self.clock(), cached)
        return cached

    # -- the loops ------------------------------------------------------------------------------------------

    def _hostable_models(self) -> list[str]:
        buffer = self.settings.gpu.memory_buffer
        out = []
        for m in self.registry.all():
            if self._inflight.get(m.spec.id, 0) >= m.spec.max_concurrent:
                continue
            if m.adapter_cls is None or self.registry.unavailable_reasons(m, self._devices, buffer):
                continue
            out.append(m.spec.id)
        return out

    def _worker_loop(self) -> None:
        while not self._stop.is_set():
            try:
                with self._claim_lock:
                    claim = transitions.claim_next_stage(
                        self.store, worker_id=self.worker_id, model_ids=self._hostable_models(),
                        include_export=True, lease_seconds=self.settings.scheduler.lease_seconds, now=self.clock())
                    if claim is not None and claim.stage.model_id is not None:
                        self._inflight[claim.stage.model_id] = self._inflight.get(claim.stage.model_id, 0) + 1
            except Exception:
                log.exception("claiming a stage failed; retrying")
                self._stop.wait(1.0)
                continue
            if claim is None:
                with self._wakeup:
                    self._wakeup.wait(timeout=1.0)
                continue
            try:
                self._run(claim)
            except Exception:
                # Not the model's failure (that is handled in _attempt) but ours: the temp dir, the store. Try to
                # give the stage back for another attempt; if even that fails, its lease runs out and the lease
                # keeper requeues it. Either way this thread goes on serving.
                log.exception("job %s stage %d: the executor failed around the model", claim.stage.job_id,
                              claim.stage.index)
                try:
                    transitions.fail_stage(self.store, claim, code=ErrorCode.INTERNAL_ERROR,
                                           message="the executor failed around the model; retrying", retry=True,
                                           release=self.release, now=self.clock())
                except Exception:
                    log.exception("could not give the stage back; its lease will expire")
            finally:
                self._stage_seconds = (0.0, self._stage_seconds[1])  # new evidence for ETAs
                if claim.stage.model_id is not None:
                    with self._claim_lock:
                        self._inflight[claim.stage.model_id] -= 1
                self.wake()  # capacity freed, and the job's next stage may be queued

    def _lease_loop(self) -> None:
        """Renew the leases of stages running here; fail those past job_timeout; requeue expired leases."""
        lease = self.settings.scheduler.lease_seconds
        while not self._stop.wait(lease / 3):
            try:
                now = self.clock()
                running = list(self._running.values())
                for r in running:
                    if now > r.deadline and not r.cancelled.is_set():
                        # A model that hangs without reporting cannot be stopped inside this process; its job
                        # fails now and the thread's late results are refused (device worker processes, which
                        # can be killed, replace this executor).
                        r.cancelled.set()
                        transitions.fail_stage(self.store, r.claim, code=ErrorCode.TIMEOUT, retry=False,
                                               message=self._timeout_message(), release=self.release, now=now)
                transitions.renew_leases(self.store, [r.claim for r in running if now <= r.deadline],
                                         lease_seconds=lease, now=now)
                transitions.recover_lost_stages(self.store, now=now, release=self.release)
            except Exception:
                log.exception("lease keeping failed; retrying")

    def _timeout_message(self) -> str:
        return f"the stage ran longer than scheduler.job_timeout ({self.settings.scheduler.job_timeout} s)"

    # -- one stage ------------------------------------------------------------------------------------------

    def _run(self, claim: ClaimedStage) -> None:
        stage = claim.stage
        cancelled = threading.Event()
        timeout = self.settings.scheduler.job_timeout
        self._running[stage.id] = _Running(claim, cancelled, self.clock() + timeout)
        reporter = ProgressReporter(self.store, claim, cancelled, timeout, self.clock)
        log.info("job %s stage %d (%s) attempt %d started", stage.job_id, stage.index, stage.name, stage.attempts)
        try:
            with self.artifacts.temp_dir(f"stage-{stage.id}-") as work:
                outcome = self._attempt(claim, work, reporter)
        finally:
            self._running.pop(stage.id, None)
        if outcome is not None:
            code, message = outcome
            if code == CANCELLED:
                if self._stop.is_set():  # shutting down, not cancelled: the next start runs it again
                    transitions.requeue_stage(self.store, claim, release=self.release, now=self.clock())
                    log.info("job %s stage %d requeued at shutdown", stage.job_id, stage.index)
                else:
                    transitions.acknowledge_cancel(self.store, claim, release=self.release, now=self.clock())
            else:
                log.warning("job %s stage %d failed: %s: %s", stage.job_id, stage.index, code, message)
                transitions.fail_stage(self.store, claim, code=code, message=message, retry=False,
                                       release=self.release, now=self.clock())

    def _attempt(self, claim: ClaimedStage, work: Path, reporter: ProgressReporter) -> tuple[str, str] | None:
        stage = claim.stage
        try:
            inputs = self._materialize(claim, work)
            exporting = stage.name == EXPORT_STAGE and stage.model_id is None
            if exporting:
                files = self._export(inputs, stage.params, work)
            else:
                adapter = self._adapter(stage.model_id)
                params = adapter.Params.model_validate(stage.params)
                files = adapter.run(inputs, params, reporter)
            reporter.check()  # a stage boundary is a cancellation point too
            outputs: list[OutputRecord] = []
            with self.blob_lock:
                for key, path in files.items():
                    if not path.resolve().is_relative_to(work.resolve()):
                        # put() moves its source; an adapter handing back, say, its input must not move a
                        # stored blob away
                        copy = work / f"returned-{key}{path.suffix}"
                        shutil.copyfile(path, copy)
                        path = copy
                    known = geometry.format_of(path)
                    fmt = known.name if known else path.suffix.lstrip(".").lower()
                    # A model's mesh goes on to the export stage, which publishes it in the asked format; what
                    # else it made (part labels, an intermediate image) is published as it is.
                    public = exporting or key != "mesh"
                    name = path.name if exporting else f"{key}.{fmt}" if public else f"{stage.name}.{key}.{fmt}"
                    sha, size = self.artifacts.put(path)
                    media = known.media_type if known else (
                        mimetypes.guess_type(path.name)[0] or "application/octet-stream")
                    outputs.append(OutputRecord(name=name, stage_index=stage.index, sha256=sha, size=size,
                                                media_type=media, format=fmt, public=public))
                transitions.complete_stage(self.store, claim, outputs, release=self.release, now=self.clock())
            return None
        except StageCancelled:
            return CANCELLED, ""
        except StageTimeout:
            return ErrorCode.TIMEOUT, self._timeout_message()
        except geometry.MeshError as e:
            return (ErrorCode.INVALID_INPUT if e.code == ErrorCode.INVALID_MESH else e.code), str(e)
        except InputRejected as e:
            return ErrorCode.INVALID_INPUT, str(e)
        except Exception as e:  # a model's own failure: the job fails with its message, the service goes on
            log.exception("job %s stage %d raised", stage.job_id, stage.index)
            return ErrorCode.MODEL_ERROR, f"{type(e).__name__}: {e}"

    def _materialize(self, claim: ClaimedStage, work: Path) -> RunInputs:
        req = claim.job_request
        rows = self.store.job_inputs(claim.stage.job_id)
        images = [self.artifacts.path(r["sha256"]) for r in rows if r["role"] == "image"]
        mesh = next((self.artifacts.path(r["sha256"]) for r in rows if r["role"] == "mesh"), None)
        mesh_format = next((r["format"] for r in rows if r["role"] == "mesh"), None)
        if claim.stage.index > 0:  # a later stage works on the mesh the stage before it made
            previous = self.store.stage_outputs(claim.stage.job_id, claim.stage.index - 1)
            made = next((o for o in previous if ".mesh." in o.name), None)
            if made is not None:
                mesh, mesh_format = self.artifacts.path(made.sha256), made.format
        if mesh is not None and mesh_format and mesh.suffix != f".{mesh_format}":
            # Loaders decide by extension; a content-addressed blob has none, so give it one.
            linked = work / f"input.{mesh_format}"
            os.link(mesh, linked) if mesh.stat().st_dev == work.stat().st_dev else linked.write_bytes(mesh.read_bytes())
            mesh = linked
        return RunInputs(work_dir=work, text=req.get("text_prompt"), images=images, mesh=mesh,
                         quality=req.get("quality", "medium"), texture_resolution=req.get("texture_resolution", 1024),
                         seed=req.get("seed"))

    def _export(self, inputs: RunInputs, params: dict, work: Path) -> dict[str, Path]:
        """The last stage: the mesh in the asked format (decimated if asked), and a PNG preview."""
        if inputs.mesh is None:
            raise geometry.MeshError("the export stage found no mesh from the stage before it")
        fmt, target = params.get("format", "glb"), params.get("target_faces")
        dest = work / f"model{geometry.FORMATS[fmt].suffix}"
        scene = geometry.load_scene(inputs.mesh, inputs.mesh.suffix.lstrip("."),
                                    self.settings.storage.mesh_limits)
        decimated = False
        if target:
            smaller = geometry.decimate_scene(scene, target)  # the same scene when it is small enough already
            scene, decimated = smaller, smaller is not scene
        spec = geometry.FORMATS[fmt]
        if inputs.mesh.suffix == spec.suffix and not decimated:
            # Already in the asked format: pass it through, so what trimesh cannot write (skins, part nodes,
            # extras) survives.
            shutil.copyfile(inputs.mesh, dest)
        elif spec.convert_glb is not None and inputs.mesh.suffix == ".glb" and not decimated:
            spec.convert_glb(inputs.mesh, dest)  # from the file itself, for the same reason
        else:
            geometry.export_scene(scene, fmt, dest)
        preview = work / "preview.png"
        geometry.render_preview(scene, preview)
        return {"model": dest, "preview": preview}

    def _adapter(self, model_id: str | None) -> ModelAdapter:
        assert model_id is not None
        lock = self._adapter_locks.setdefault(model_id, threading.Lock())
        with lock:
            adapter = self._adapters.get(model_id)
            if adapter is None:
                registered = self.registry.get(model_id)
                assert registered.adapter_cls is not None
                adapter = registered.adapter_cls(registered.spec)
                device = next(d for d in self._devices if d.kind in registered.spec.devices)
                started = time.monotonic()
                adapter.load(device)
                adapter.device = device
                log.info("loaded %s on %s in %.2f s", model_id, device.id, time.monotonic() - started)
                self._adapters[model_id] = adapter
            return adapter
