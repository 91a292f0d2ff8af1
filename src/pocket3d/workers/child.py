"""The device worker process: holds one device's loaded model adapters and runs their stages.

Started by :class:`~pocket3d.workers.supervisor.DeviceWorker` as ``python -m pocket3d.workers.child --fd N``,
where N is its end of a socketpair (see :mod:`pocket3d.workers.protocol` for the messages). On a GPU the parent
has already set ``CUDA_VISIBLE_DEVICES`` to that one GPU, so inside this process it is ``cuda:0``, and the
:class:`~pocket3d.models.spec.Device` handed to ``adapter.load`` says so.

Threads: the main thread only reads commands and dispatches them. Each load, unload and stage runs in a thread of
its own, so a 30-second load never holds up progress, cancellation or another model's stage. Stages of
*different* models run at the same time; stages of one model run at most ``spec.max_concurrent`` at once (a
semaphore per model), as a model adapter expects. A model's load and unload are serialised by a lock per
model, and a stage of a model that is not resident loads it first under that lock.

Memory: a load's cost is the process's memory after ``adapter.load`` less before it (importing the adapter's
module is done first and not counted: modules are never unloaded, so no unload could give it back). A stage's
``peak_memory_mb`` is its model's load cost plus how far the process rose above its level at the stage's start
(:mod:`pocket3d.workers.memory`). Unloading calls ``adapter.unload()``, drops the adapter, runs the garbage
collector, empties torch's CUDA cache if torch is in use and asks glibc to hand freed heap back
(``malloc_trim``); the reply says how much came back so the parent can restart the process when too little did.

Out-of-memory: ``MemoryError`` (numpy's failed allocations are one) or any ``OutOfMemoryError`` class
(torch.cuda's, found by name so torch stays optional), also when chained as a cause, becomes ``OUT_OF_MEMORY``
with a message naming the model, the device, its budget and what is resident. The failed attempt's frames are
released and the collector run before the reply, so a retry in this process starts from a clean state.

If the parent goes away (its end of the socket closes) the process exits at once: there is nobody to report to,
and a GPU's memory is only returned when the process is gone.
"""

from __future__ import annotations

import gc
import importlib
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, fields
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from pocket3d import logs
from pocket3d.workers import protocol as p
from pocket3d.workers.memory import MemoryProbe, StageMemory, probe_for

log = logging.getLogger("pocket3d.workers.child")

PROGRESS_INTERVAL = 0.1  # seconds between progress messages of one stage with the same message
MAX_WARNINGS = 20  # per stage: a model that warns in a loop must not flood the job
ENTRY_POINT_GROUP = "pocket3d.models"


@dataclass
class _Hosted:
    adapter: Any  # a pocket3d.models.spec.ModelAdapter
    memory_mb: float
    slots: threading.BoundedSemaphore
    running: int = 0  # stages claimed (running or waiting for a slot); unload refuses while any


@dataclass
class _Stage:
    request: p.StageRequest
    cancelled: threading.Event


class _Progress:
    """The ``progress`` callback handed to ``adapter.run``: forwards a new message at once and a new fraction
    now and then, collects warnings (``models.spec.warn``), and stops a cancelled stage."""

    def __init__(self, worker: ChildWorker, stage: _Stage):
        self._worker, self._stage = worker, stage
        self._last_sent = float("-inf")
        self._fraction = 0.0
        self._message: str | None = None
        self.warnings: list[tuple[str, str]] = []

    def __call__(self, fraction: float, message: str | None = None) -> None:
        self.check()
        now = time.monotonic()
        fresh = message is not None and message != self._message
        self._fraction = float(fraction)
        if fresh or now - self._last_sent >= PROGRESS_INTERVAL or fraction >= 1.0:
            self._last_sent = now
            self._message = message if message is not None else self._message
            self._worker.send(p.Progress(self._stage.request.stage_id, self._fraction, message))

    def warn(self, code: str, message: str) -> None:
        if len(self.warnings) < MAX_WARNINGS:
            self.warnings.append((str(code), str(message)))
        self(self._fraction, str(message))

    def check(self) -> None:
        if self._stage.cancelled.is_set():
            from pocket3d.models.spec import StageCancelled

            raise StageCancelled()


class ChildWorker:
    def __init__(self, conn: Connection, hello: p.Hello, probe: MemoryProbe):
        self.conn = conn
        self.device_info = hello.device
        self.device_id: str = hello.device["id"]
        self.budget_mb = hello.budget_mb
        self.probe = probe
        self.stage_memory = StageMemory(probe)
        self._lock = threading.Lock()  # guards _hosted, _stages, _model_locks
        self._send_lock = threading.Lock()
        self._hosted: dict[str, _Hosted] = {}
        self._model_locks: dict[str, threading.Lock] = {}
        self._stages: dict[int, _Stage] = {}
        self._warm = hello.warm
        self._imported = threading.Event()  # the libraries of the models this device may host are imported

    def warm_imports(self) -> None:
        """Import the libraries of every model this device may host (``Hello.warm``), before the first load needs
        them. A load waits for this first: its memory is measured from after the imports, which no unload could
        give back anyway."""
        started = time.monotonic()
        try:
            for adapter_name, spec in self._warm:
                try:
                    resolve_adapter(adapter_name).warm(spec)
                except Exception as e:  # noqa: BLE001 - the load says why, if it is ever asked for
                    log.debug("warming %s's libraries failed: %s", adapter_name, e)
            if self._warm:
                log.info("imported the libraries of %d model(s) in %.2f s", len(self._warm),
                         time.monotonic() - started)
        finally:
            self._imported.set()

    # -- the command loop -------------------------------------------------------------------------------------

    def serve(self) -> None:
        while True:
            try:
                message = self.conn.recv()
            except (EOFError, OSError):
                _exit_now("the scheduler closed the connection")
            except Exception:
                log.exception("a message from the scheduler could not be read; ignored")
                continue
            if isinstance(message, p.Shutdown):
                self._shutdown()
                return
            if isinstance(message, p.Cancel):
                with self._lock:
                    stage = self._stages.get(message.stage_id)
                if stage is not None:
                    stage.cancelled.set()
            elif isinstance(message, p.RunStage):
                stage = _Stage(message.request, threading.Event())
                with self._lock:
                    self._stages[message.request.stage_id] = stage
                _thread(f"stage-{message.request.stage_id}", self._stage_command, stage)
            elif isinstance(message, p.Load):
                _thread(f"load-{message.model_id}", self._load_command, message)
            elif isinstance(message, p.Unload):
                _thread(f"unload-{message.model_id}", self._unload_command, message)
            else:
                log.error("unknown message %r ignored", type(message).__name__)

    def send(self, message: Any) -> None:
        with self._send_lock:
            self._send_locked(message)

    def _send_with_resident(self, make: Callable[[dict[str, float]], Any]) -> None:
        # The resident snapshot is taken under the send lock, so snapshots reach the parent in the order the
        # changes happened.
        with self._send_lock:
            with self._lock:
                resident = {m: h.memory_mb for m, h in self._hosted.items()}
            self._send_locked(make(resident))

    def _send_locked(self, message: Any) -> None:
        try:
            self.conn.send(message)
        except (OSError, EOFError):
            _exit_now("the scheduler's end of the connection is gone")

    def _shutdown(self) -> None:
        with self._lock:
            for stage in self._stages.values():
                stage.cancelled.set()
            idle = [(m, h) for m, h in self._hosted.items() if h.running == 0]
        for model_id, hosted in idle:  # adapters may hold resources of their own (temp files, subprocesses)
            try:
                hosted.adapter.unload()
            except Exception:
                log.exception("unloading %s at shutdown failed", model_id)
        _exit_now(None)

    # -- load and unload --------------------------------------------------------------------------------------

    def _model_lock(self, model_id: str) -> threading.Lock:
        with self._lock:
            return self._model_locks.setdefault(model_id, threading.Lock())

    def _load_command(self, message: p.Load) -> None:
        with self._model_lock(message.model_id):
            _, result, _ = self._ensure_loaded(message.model_id, message.adapter, message.spec)
        self._send_with_resident(lambda resident: p.LoadDone(message.request_id, result, resident))

    def _ensure_loaded(self, model_id: str, adapter_name: str, spec: Any) -> tuple[_Hosted | None, p.LoadResult, bool]:
        """The model, loading it if it is not resident. The caller holds the model's lock.
        Returns (hosted or None, the load's result, whether it was loaded now)."""
        with self._lock:
            hosted = self._hosted.get(model_id)
        if hosted is not None:
            return hosted, p.LoadResult(True, 0.0, hosted.memory_mb, message="already resident"), False
        self._imported.wait()
        started = time.monotonic()
        failure: tuple[str, str] | None = None
        try:
            adapter_cls = resolve_adapter(adapter_name)
            adapter = adapter_cls(spec)
            device = self._adapter_device()
            before = self.probe.current_mb()
            adapter.load(device)
            adapter.device = device
            memory_mb = max(0.0, self.probe.current_mb() - before)
        except BaseException as e:  # noqa: BLE001 - a model's failure to load must not end the worker
            failure = self._classify(e, model_id, action="loading")
            adapter = None
        seconds = time.monotonic() - started
        if failure is not None:
            _release_memory()  # what the failed load allocated, now unreferenced
            log.warning("loading %s on %s failed: %s", model_id, self.device_id, failure[1])
            code = failure[0] if failure[0] == p.OUT_OF_MEMORY else p.MODEL_ERROR
            return None, p.LoadResult(False, seconds, None, code, failure[1]), False
        hosted = _Hosted(adapter, memory_mb, threading.BoundedSemaphore(max(1, int(spec.max_concurrent))))
        with self._lock:
            self._hosted[model_id] = hosted
        log.info("loaded %s on %s in %.2f s (%.0f MB)", model_id, self.device_id, seconds, memory_mb)
        return hosted, p.LoadResult(True, seconds, memory_mb), True

    def _unload_command(self, message: p.Unload) -> None:
        started = time.monotonic()
        with self._model_lock(message.model_id):
            result = self._unload(message.model_id, started)
        self._send_with_resident(lambda resident: p.UnloadDone(message.request_id, result, resident))

    def _unload(self, model_id: str, started: float) -> p.UnloadResult:
        with self._lock:
            hosted = self._hosted.get(model_id)
            if hosted is None:
                return p.UnloadResult(True, 0.0, 0.0, 0.0, message="not resident")
            if hosted.running:
                return p.UnloadResult(False, 0.0, hosted.memory_mb, 0.0,
                                      message=f"model {model_id} has {hosted.running} stage(s) running; not unloaded")
            del self._hosted[model_id]
        before = self.probe.current_mb()
        try:
            hosted.adapter.unload()
        except Exception:
            log.exception("%s.unload() failed; dropping it anyway", model_id)
        expected = hosted.memory_mb
        del hosted
        _release_memory()
        returned = max(0.0, before - self.probe.current_mb())
        log.info("unloaded %s from %s: %.0f of %.0f MB came back", model_id, self.device_id, returned, expected)
        return p.UnloadResult(True, time.monotonic() - started, expected, returned)

    def _adapter_device(self) -> Any:
        from pocket3d.models.spec import Device

        known = {f.name for f in fields(Device)}
        info = {k: v for k, v in self.device_info.items() if k in known}
        if info.get("kind") == "cuda" and info.get("index") is not None and not info.get("virtual"):
            info["id"], info["index"] = "cuda:0", 0  # CUDA_VISIBLE_DEVICES leaves this process one GPU
        return Device(**info)

    # -- stages ----------------------------------------------------------------------------------------------

    def _stage_command(self, stage: _Stage) -> None:
        with logs.bound(stage.request.log_context):
            self._stage(stage)

    def _stage(self, stage: _Stage) -> None:
        request = stage.request
        hosted: _Hosted | None = None
        try:
            with self._model_lock(request.model_id):
                hosted, load, loaded_now = self._ensure_loaded(request.model_id, request.adapter, request.spec)
                if hosted is not None:
                    with self._lock:
                        hosted.running += 1
            if hosted is None:
                result = p.StageResult(request.stage_id, None, load.error_code, load.message, None, 0.0,
                                       load_seconds=load.seconds)
            else:
                result = self._run(hosted, stage, load.seconds if loaded_now else None)
        except BaseException as e:  # noqa: BLE001 - our own failure around the model; the worker goes on
            log.exception("stage %d: the worker failed around the model", request.stage_id)
            result = p.StageResult(request.stage_id, None, p.MODEL_ERROR,
                                   f"the worker failed around the model: {type(e).__name__}: {e}", None, 0.0)
        finally:
            with self._lock:
                if hosted is not None:
                    hosted.running -= 1
                self._stages.pop(request.stage_id, None)
        self._send_with_resident(lambda resident: p.StageDone(result, resident))

    def _run(self, hosted: _Hosted, stage: _Stage, load_seconds: float | None) -> p.StageResult:
        request = stage.request
        progress = _Progress(self, stage)
        with hosted.slots:
            started = time.monotonic()
            self.stage_memory.begin(request.stage_id)
            files: dict[str, Path] | None = None
            failure: tuple[str, str] | None = None
            try:
                progress.check()  # cancelled while it waited for its slot
                params = hosted.adapter.Params.model_validate(request.params)
                returned = hosted.adapter.run(request.inputs, params, progress)
                progress.check()  # the stage's end is a cancellation point too
                files = {str(name): Path(path) for name, path in returned.items()}
            except BaseException as e:  # noqa: BLE001 - whatever the model raised becomes the stage's result
                failure = self._classify(e, request.model_id, action="running")
            seconds = time.monotonic() - started
            level, process_peak = self.stage_memory.end(request.stage_id)
        if failure is not None and failure[0] == p.OUT_OF_MEMORY:
            _release_memory()  # the failed attempt's arrays, so an evict-and-retry starts clean
        peak = hosted.memory_mb + max(0.0, process_peak - level)
        warnings = tuple(progress.warnings)
        if failure is not None:
            return p.StageResult(request.stage_id, None, failure[0], failure[1], peak, seconds, load_seconds,
                                 process_peak, warnings)
        return p.StageResult(request.stage_id, files, None, "", peak, seconds, load_seconds, process_peak, warnings)

    # -- errors ----------------------------------------------------------------------------------------------

    def _classify(self, error: BaseException, model_id: str, action: str) -> tuple[str, str]:
        from pocket3d.errors import storage_failure
        from pocket3d.models.spec import InputRejected, StageCancelled

        if isinstance(error, StageCancelled):
            return p.CANCELLED, "cancelled"
        if is_out_of_memory(error):
            return p.OUT_OF_MEMORY, self._oom_message(model_id, error, action)
        if (full := storage_failure(error)) is not None:
            return p.STORAGE_UNAVAILABLE, f"the disk refused a write while {action} {model_id}: {full}"
        if isinstance(error, InputRejected):
            return p.INVALID_INPUT, str(error)
        if type(error).__name__ == "ValidationError" and type(error).__module__.startswith("pydantic"):
            return p.INVALID_INPUT, f"invalid parameters for model {model_id}: {error}"
        mesh_errors = sys.modules.get("pocket3d.geometry.errors")
        if mesh_errors is not None and isinstance(error, mesh_errors.MeshError):
            code = str(error.code)
            return (p.INVALID_INPUT if code == "INVALID_MESH" else code), str(error)
        log.error("%s %s on %s raised", action, model_id, self.device_id, exc_info=error)
        return p.MODEL_ERROR, f"{type(error).__name__}: {error}"

    def _oom_message(self, model_id: str, error: BaseException, action: str) -> str:
        with self._lock:
            resident = {m: h.memory_mb for m, h in self._hosted.items()}
        in_use = sum(resident.values())
        holders = ", ".join(f"{m} {mb:.0f} MB" for m, mb in sorted(resident.items(), key=lambda kv: -kv[1]))
        what = "memory" if self.device_info.get("kind") != "cuda" else "device memory"
        return (f"model {model_id} ran out of {what} on {self.device_id} while {action} "
                f"(budget {self.budget_mb:.0f} MB, {in_use:.0f} MB in use by {len(resident)} model(s)"
                f"{': ' + holders if holders else ''}; the worker process holds {self.probe.current_mb():.0f} MB)"
                f": {type(error).__name__}: {error}")


def is_out_of_memory(error: BaseException) -> bool:
    """MemoryError, torch's OutOfMemoryError (by name: torch is optional), or an error caused by either."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, MemoryError) or any(c.__name__ == "OutOfMemoryError" for c in type(current).__mro__):
            return True
        if isinstance(current, RuntimeError) and str(current).startswith("CUDA out of memory"):  # torch < 1.13
            return True
        current = current.__cause__ or current.__context__
    return False


def resolve_adapter(name: str) -> type:
    """An adapter class from "package.module:Class" or a ``pocket3d.models`` entry-point name."""
    from pocket3d.models.spec import ModelAdapter

    if ":" in name:
        module_name, _, attr = name.partition(":")
        obj = getattr(importlib.import_module(module_name), attr)
    else:
        from importlib.metadata import entry_points

        found = entry_points(group=ENTRY_POINT_GROUP, name=name)
        if not found:
            raise LookupError(f"no {ENTRY_POINT_GROUP!r} entry point named {name!r}")
        obj = next(iter(found)).load()
    if not (isinstance(obj, type) and issubclass(obj, ModelAdapter)):
        raise LookupError(f"adapter {name!r} is not a ModelAdapter subclass")
    return obj


def _release_memory() -> None:
    gc.collect()
    torch = sys.modules.get("torch")
    try:
        if torch is not None and torch.cuda.is_initialized():
            torch.cuda.empty_cache()
    except Exception:
        log.exception("torch.cuda.empty_cache() failed")
    if sys.platform.startswith("linux"):
        try:  # small blocks freed by Python and numpy stay in glibc's heap unless trimmed
            import ctypes

            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):
            pass


def _rss_mb() -> float:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / (1024 * 1024)
    except OSError:
        return 0.0


def _thread(name: str, target: Callable[..., None], *args: Any) -> None:
    # Daemon: a model hung in C code must not keep the process alive once it is told to exit.
    threading.Thread(target=target, args=args, name=name, daemon=True).start()


def _exit_now(reason: str | None) -> None:
    if reason:
        log.warning("exiting: %s", reason)
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
    os._exit(0)  # not sys.exit: stage threads may be stuck inside a model


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    fd = int(argv[argv.index("--fd") + 1])
    os.set_inheritable(fd, False)  # a model's own subprocesses must not hold the scheduler's pipe open
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group; the scheduler stops us
    conn = Connection(fd)
    hello: p.Hello = conn.recv()
    logs.configure_worker(hello.log_format, hello.log_level, hello.device["id"])
    probe = probe_for(hello.device)
    worker = ChildWorker(conn, hello, probe)
    conn.send(p.Ready(os.getpid(), _rss_mb()))
    _thread("warm-imports", worker.warm_imports)
    worker.serve()


if __name__ == "__main__":
    main()
