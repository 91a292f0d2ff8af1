"""The scheduler's handle on one device's worker process: start it, load and unload models, run stages, and
notice at once when it dies.

Process model: one child per device, ``python -m pocket3d.workers.child`` started with ``subprocess`` (not
multiprocessing's spawn, which would re-import the server's ``__main__`` in the child), talking over one socketpair
with pickled messages (:mod:`pocket3d.workers.protocol`). The environment is the server's, plus ``env``, plus
``CUDA_VISIBLE_DEVICES`` naming the device's GPU (with ``CUDA_DEVICE_ORDER=PCI_BUS_ID``, so the CUDA ordinal is
NVML's index) before the child imports anything.

Threads (parent side), two per child. The reader receives every message and makes the callbacks from it:
``on_progress``, ``on_result``, and, when the pipe reaches end-of-file (the process is gone: SIGKILL, segfault,
the OOM killer), ``on_crash(reason, running_stage_ids)`` within milliseconds of the death. The exit watcher waits
on the process itself and shuts the pipe down when it exits, for the case where a model forked and the fork still
holds the pipe open. Keep callbacks short: while one runs, no other message of that worker is read. ``run``,
``cancel`` and ``kill`` may be called from a callback (``restart`` too: the usual reaction to ``on_crash``);
``load`` and ``unload`` block on a reply that the same thread would have to read, so they refuse to run on it.

Who reports a stage: every stage handed to ``run`` is reported exactly once: by ``on_result``; or, if the child
dies, in ``on_crash``'s list; or in the list ``restart()``/``stop()`` return when the caller ended the child
itself. ``kill(reason)`` is a death like any other: ``on_crash`` follows, its reason carrying ``reason``.

Memory that does not come back: when an unload returns much less than the model's load took (at least
``RETAINED_RESTART_MB`` and a quarter of it) and nothing else is resident, running or loading, the child is
restarted, which returns everything; the :class:`UnloadResult` says ``restarted=True``. Where other models are
resident the worker is left alone (restarting would unload them too); ``UnloadResult.retained_mb`` tells the
scheduler, which may call ``restart()`` itself.
"""

from __future__ import annotations

import logging
import os
import pickle
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import asdict, dataclass, field, replace
from multiprocessing.connection import Connection, Pipe
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pocket3d
from pocket3d import logs
from pocket3d.workers.protocol import (
    TIMEOUT,
    WORKER_CRASHED,
    Cancel,
    Hello,
    Load,
    LoadDone,
    LoadResult,
    Progress,
    Ready,
    RunStage,
    Shutdown,
    StageDone,
    StageRequest,
    StageResult,
    Unload,
    UnloadDone,
    UnloadResult,
)

if TYPE_CHECKING:
    from pocket3d.models.spec import Device, ModelSpec

__all__ = ["DeviceWorker", "LoadResult", "StageRequest", "StageResult", "UnloadResult", "WorkerStartError",
           "WorkerUnavailable"]

log = logging.getLogger(__name__)

RETAINED_RESTART_MB = 256.0
# A CPU device's worker computes at a lower scheduling priority (nice, gpu.cpu_worker_nice) than the process that
# serves the API: on a machine with few cores, requests are answered first under load and the models take what is
# left (all of it while the machine is otherwise idle; a tenth of it against other programs at nice 0). A GPU
# device's worker keeps the server's: it must feed its GPU without delay.
CPU_WORKER_NICE = 10


class WorkerUnavailable(RuntimeError):
    """The worker process is not running (it died, or was never started or was stopped): start() or restart()."""


class WorkerStartError(RuntimeError):
    """The child did not come up."""


class _ChildGone(Exception):
    pass


@dataclass
class _Child:
    """One child process and what the parent knows of it; a restart makes a new one, so a late message from
    the old process can never touch the new one's bookkeeping."""

    proc: subprocess.Popen
    conn: Connection
    send_lock: threading.Lock = field(default_factory=threading.Lock)
    close_lock: threading.Lock = field(default_factory=threading.Lock)  # the pipe's closing vs its shutdown
    running: dict[int, StageRequest] = field(default_factory=dict)
    pending: dict[int, Future] = field(default_factory=dict)
    resident: dict[str, float] = field(default_factory=dict)
    alive: bool = True
    ended_by_caller: bool = False  # restart()/stop(): its running stages go to the caller, not on_crash
    kill_reason: str | None = None
    ended: threading.Event = field(default_factory=threading.Event)
    reader: threading.Thread | None = None
    watcher: threading.Thread | None = None


class DeviceWorker:
    """Parent-side handle of one device's worker subprocess."""

    def __init__(self, device: Device, *, on_progress: Callable[[int, float, str | None], None],
                 on_result: Callable[[StageResult], None], on_crash: Callable[[str, list[int]], None],
                 env: dict[str, str] | None = None, budget_mb: float | None = None, start_timeout: float = 60.0,
                 warm: Sequence[tuple[str, ModelSpec]] = (), cpu_nice: int = CPU_WORKER_NICE):
        self.device = device
        self.nice = cpu_nice if device.kind == "cpu" else 0
        self.warm = tuple(warm)  # (adapter, spec) whose libraries each child imports as soon as it is up
        self.budget_mb = float(budget_mb if budget_mb is not None else device.memory_total)
        self.start_timeout = start_timeout
        self.startup_seconds: float | None = None  # the last start's spawn-to-ready time
        self._on_progress, self._on_result, self._on_crash = on_progress, on_result, on_crash
        self._env = dict(env or {})
        self._lock = threading.Condition()  # guards the current child's bookkeeping; notified as stages end
        self._lifecycle = threading.RLock()  # one start/restart/stop at a time
        self._child: _Child | None = None
        self._closed = False
        self._next_request = 0

    # -- lifecycle -----------------------------------------------------------------------------------------

    def start(self) -> None:
        with self._lifecycle:
            self._closed = False
            if self.alive:
                return
            self._spawn()

    def restart(self) -> list[int]:
        """A fresh child with nothing resident. Returns the stages that were running in the old one: they are
        lost, and reported only here (not to on_crash). On a stopped worker it does nothing."""
        with self._lifecycle:
            if self._closed:
                return []
            lost = self._end_child("restart requested") if self.alive else []
            self._spawn()
            return lost

    def stop(self, timeout: float = 10) -> list[int]:
        """Stop the child: running stages are cancelled (their CANCELLED results come through on_result while
        there is time), then it is asked to exit, and killed if it does not. Returns the stages that never
        reported; the process is gone (and reaped) when this returns."""
        with self._lifecycle:
            self._closed = True
            child = self._child
            if child is None or not child.alive:
                return []
            deadline = time.monotonic() + timeout
            with self._lock:
                stage_ids = list(child.running)
            for stage_id in stage_ids:
                self.cancel(stage_id)
            with self._lock:
                self._lock.wait_for(lambda: not child.running or not child.alive,
                                    max(0.0, deadline - time.monotonic()) / 2)
                lost = self._take_over(child)
            try:
                self._send(child, Shutdown())
            except _ChildGone:
                pass
            try:
                child.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("worker for %s did not exit when asked; killing it", self.device.id)
                _kill(child.proc)
                child.proc.wait(5)
            if threading.current_thread() is not child.reader:  # (stop() called from a callback)
                child.ended.wait(5)
            return lost

    def __enter__(self) -> DeviceWorker:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- models --------------------------------------------------------------------------------------------

    def load(self, model_id: str, adapter: str, spec: ModelSpec, timeout: float | None = None) -> LoadResult:
        """Load a model into the child (blocking). A load that outlives ``timeout`` kills the child (a hung
        load cannot be stopped otherwise) and returns TIMEOUT; on_crash follows."""
        started = time.monotonic()
        try:
            child, future = self._request(lambda rid: Load(rid, model_id, adapter, spec))
        except _ChildGone as e:
            return LoadResult(False, 0.0, None, WORKER_CRASHED, str(e))
        try:
            return future.result(timeout)
        except FutureTimeout:
            self.kill(f"loading {model_id} took longer than {timeout:g} s")
            return LoadResult(False, time.monotonic() - started, None, TIMEOUT,
                              f"loading {model_id} on {self.device.id} took longer than {timeout:g} s; "
                              "the worker was killed")
        except _ChildGone as e:
            return LoadResult(False, time.monotonic() - started, None, WORKER_CRASHED,
                              f"{e} while loading {model_id}")

    def unload(self, model_id: str, *, restart_if_retained: bool = True) -> UnloadResult:
        """Unload a model (blocking); its memory is back in the system when this returns (see the module
        docstring for the restart that makes sure). A model with running stages is not unloaded (ok=False)."""
        started = time.monotonic()
        try:
            child, future = self._request(lambda rid: Unload(rid, model_id))
            result: UnloadResult = future.result()
        except _ChildGone:
            # No process, nothing resident: the memory went back with it.
            return UnloadResult(True, time.monotonic() - started, 0.0, 0.0, message="the worker is not running")
        if result.ok and restart_if_retained and self._should_restart(child, result):
            log.warning("unloading %s from %s returned %.0f of %.0f MB; restarting the worker to return the rest",
                        model_id, self.device.id, result.returned_mb, result.expected_mb)
            self.restart()
            result = replace(result, restarted=True, returned_mb=result.expected_mb,
                             seconds=time.monotonic() - started)
        return result

    def _should_restart(self, child: _Child, result: UnloadResult) -> bool:
        retained = result.retained_mb
        if retained < RETAINED_RESTART_MB or retained < 0.25 * result.expected_mb:
            return False
        with self._lock:
            # Only a worker with nothing in it: no model, no stage, no load under way.
            return (not self._closed and child is self._child and child.alive and not child.resident
                    and not child.running and not child.pending)

    # -- stages --------------------------------------------------------------------------------------------

    def run(self, request: StageRequest) -> None:
        """Hand a stage to the child; returns at once. Its result comes through on_result (or on_crash).
        Raises WorkerUnavailable when there is no running child to take it."""
        data = pickle.dumps(RunStage(request), protocol=pickle.HIGHEST_PROTOCOL)  # unpicklable: fail here
        with self._lock:
            child = self._child
            if child is None or not child.alive:
                raise WorkerUnavailable(f"the worker for device {self.device.id} is not running")
            if request.stage_id in child.running:
                raise ValueError(f"stage {request.stage_id} is already running on {self.device.id}")
            child.running[request.stage_id] = request
        try:
            self._send_bytes(child, data)
        except _ChildGone:
            pass  # it died just now: the reader reports this stage with the others in on_crash

    def cancel(self, stage_id: int) -> None:
        """Ask the stage to stop: the model's next progress call raises StageCancelled and the result is
        CANCELLED. A model that never reports progress can only be stopped by kill()."""
        with self._lock:
            child = self._child
            if child is None or not child.alive or stage_id not in child.running:
                return
        try:
            self._send(child, Cancel(stage_id))
        except _ChildGone:
            pass

    def kill(self, reason: str) -> None:
        """SIGKILL the child (a stage past its timeout, a hung model). on_crash follows, naming ``reason``."""
        with self._lock:
            child = self._child
            if child is None or not child.alive:
                return
            child.kill_reason = reason
        _kill(child.proc)

    # -- state ---------------------------------------------------------------------------------------------

    @property
    def alive(self) -> bool:
        child = self._child
        return child is not None and child.alive and child.proc.poll() is None

    @property
    def resident(self) -> dict[str, float]:
        """Model id -> the memory its load was measured to take, as the child last reported."""
        with self._lock:
            child = self._child
            return dict(child.resident) if child is not None and child.alive else {}

    @property
    def running(self) -> list[int]:
        with self._lock:
            child = self._child
            return sorted(child.running) if child is not None and child.alive else []

    @property
    def pid(self) -> int | None:
        child = self._child
        return child.proc.pid if child is not None and child.alive else None

    # -- the child process -----------------------------------------------------------------------------------

    def _spawn(self) -> None:
        started = time.monotonic()
        ours, theirs = Pipe(duplex=True)
        fd = theirs.fileno()
        try:
            proc = subprocess.Popen([sys.executable, "-m", "pocket3d.workers.child", "--fd", str(fd)],
                                    pass_fds=(fd,), env=self._child_env(), stdin=subprocess.DEVNULL)
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        if self.nice:
            _lower_priority(proc.pid, self.nice)
        try:
            log_level = logging.getLogger("pocket3d").getEffectiveLevel()
            ours.send(Hello(_device_dict(self.device), self.budget_mb, log_level, self.warm, logs.active_format()))
            if not ours.poll(self.start_timeout):
                raise WorkerStartError(f"the worker for device {self.device.id} (pid {proc.pid}) was not ready "
                                       f"within {self.start_timeout:g} s")
            ready = ours.recv()
            if not isinstance(ready, Ready):
                raise WorkerStartError(f"the worker for device {self.device.id} said {ready!r} instead of ready")
        except (EOFError, OSError) as e:
            _kill(proc)
            ours.close()
            raise WorkerStartError(f"the worker for device {self.device.id} {_describe_exit(proc.wait())} at "
                                   "start-up (its stderr says why)") from e
        except BaseException:
            _kill(proc)
            proc.wait()
            ours.close()
            raise
        self.startup_seconds = time.monotonic() - started
        child = _Child(proc, ours)
        child.reader = threading.Thread(target=self._read, args=(child,), daemon=True,
                                        name=f"worker-{self.device.id}-{proc.pid}")
        child.watcher = threading.Thread(target=self._watch, args=(child,), daemon=True,
                                         name=f"worker-{self.device.id}-{proc.pid}-exit")
        with self._lock:
            self._child = child
        child.reader.start()
        child.watcher.start()
        log.info("worker for %s started (pid %d, ready in %.2f s, %.0f MB)", self.device.id, proc.pid,
                 self.startup_seconds, ready.memory_mb)

    def _child_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(self._env)
        # The child must import this very pocket3d. A source checkout goes on its path; an installed package
        # is found anyway, and site-packages must not go ahead of the standard library.
        source = Path(pocket3d.__file__).resolve().parents[1]
        paths = env.get("PYTHONPATH", "").split(os.pathsep) if env.get("PYTHONPATH") else []
        if source.name not in ("site-packages", "dist-packages") and str(source) not in paths:
            env["PYTHONPATH"] = os.pathsep.join([str(source), *paths])
        index = getattr(self.device, "index", None)
        if self.device.kind == "cuda" and index is not None and not getattr(self.device, "virtual", False):
            env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"  # CUDA's ordinals then match NVML's indices
            env["CUDA_VISIBLE_DEVICES"] = str(index)
        return env

    def _end_child(self, why: str) -> list[int]:
        """Kill the current child on the caller's behalf and wait until its reader has wound it up."""
        with self._lock:
            child = self._child
            if child is None or not child.alive:
                return []
            child.kill_reason = why
            lost = self._take_over(child)
        _kill(child.proc)
        if threading.current_thread() is not child.reader:
            child.ended.wait(10)
        return lost

    def _take_over(self, child: _Child) -> list[int]:
        """The caller ends this child: its running stages become the caller's to report (a result that still
        arrives is dropped), and on_crash will not be called. Holds self._lock."""
        child.ended_by_caller = True
        child.alive = False  # no new stage may go to it
        lost = sorted(child.running)
        child.running.clear()
        return lost

    def _request(self, make: Callable[[int], Any]) -> tuple[_Child, Future]:
        with self._lock:
            child = self._child
            if child is not None and threading.current_thread() is child.reader:
                raise RuntimeError("load() and unload() block on a reply this thread reads: "
                                   "call them from another thread, not from a worker callback")
            if child is None or not child.alive:
                raise _ChildGone(f"the worker for device {self.device.id} is not running")
            self._next_request += 1
            request_id = self._next_request
            future: Future = Future()
            child.pending[request_id] = future
        try:
            self._send(child, make(request_id))
        except _ChildGone:
            pass  # the reader fails the future
        return child, future

    def _send(self, child: _Child, message: Any) -> None:
        self._send_bytes(child, pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL))

    def _send_bytes(self, child: _Child, data: bytes) -> None:
        try:
            with child.send_lock:
                child.conn.send_bytes(data)
        except (OSError, ValueError) as e:  # ValueError: the connection was closed
            raise _ChildGone(f"the worker for device {self.device.id} is gone") from e

    # -- the reader thread -------------------------------------------------------------------------------------

    def _read(self, child: _Child) -> None:
        while True:
            try:
                message = child.conn.recv()
            except (EOFError, OSError):
                break
            except Exception:
                log.exception("worker for %s sent a message that could not be read", self.device.id)
                continue
            try:
                self._dispatch(child, message)
            except Exception:
                log.exception("handling %s from the worker for %s failed", type(message).__name__, self.device.id)
        self._wind_up(child)

    def _watch(self, child: _Child) -> None:
        """End the reader when the process exits even if the pipe stays open: a model that forked (a data
        loader's workers, say) leaves copies of the child's end in processes that outlive it."""
        child.proc.wait()
        with child.close_lock:
            if child.conn.closed:
                return
            try:
                # shutdown, unlike close, wakes a recv blocked in another thread; what was sent before the
                # death is still read first
                with socket.socket(fileno=os.dup(child.conn.fileno())) as ours:
                    ours.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _dispatch(self, child: _Child, message: Any) -> None:
        if isinstance(message, Progress):
            if message.stage_id in child.running:
                self._on_progress(message.stage_id, message.fraction, message.message)
        elif isinstance(message, StageDone):
            with self._lock:
                child.resident = dict(message.resident)
                # Absent: stop() or restart() already handed this stage back to their caller.
                known = child.running.pop(message.result.stage_id, None) is not None
                self._lock.notify_all()
            if known:
                self._on_result(message.result)
        elif isinstance(message, (LoadDone, UnloadDone)):
            with self._lock:
                child.resident = dict(message.resident)
                future = child.pending.pop(message.request_id, None)
            if future is not None:
                future.set_result(message.result)
        else:
            log.error("worker for %s sent an unknown message %r", self.device.id, type(message).__name__)

    def _wind_up(self, child: _Child) -> None:
        """The pipe is closed: the process is gone (or going). Settle everything it held."""
        try:
            returncode = child.proc.wait(5)
        except subprocess.TimeoutExpired:  # it closed the pipe but lives on: not a worker we can use
            _kill(child.proc)
            returncode = child.proc.wait()
        with child.close_lock:
            child.conn.close()
        with self._lock:
            child.alive = False
            lost = sorted(child.running)
            child.running.clear()
            child.resident = {}
            pending = list(child.pending.values())
            child.pending.clear()
            by_caller = child.ended_by_caller
            self._lock.notify_all()
        reason = f"worker for device {self.device.id} (pid {child.proc.pid}) {_describe_exit(returncode)}"
        if child.kill_reason and not by_caller:
            reason += f": {child.kill_reason}"
        elif returncode == -signal.SIGKILL and not by_caller:
            reason += " (not by pocket3d: the kernel's out-of-memory killer is the usual sender)"
        for future in pending:
            future.set_exception(_ChildGone(reason))
        child.ended.set()
        if by_caller:
            return
        log.warning("%s; stages lost: %s", reason, lost or "none")
        try:
            self._on_crash(reason, lost)
        except Exception:
            log.exception("the on_crash callback failed")


def _device_dict(device: Device) -> dict[str, Any]:
    try:
        return asdict(device)
    except TypeError:  # not a dataclass: the fields the child needs
        return {k: getattr(device, k, None) for k in ("id", "kind", "name", "memory_total", "memory_used",
                                                        "index", "virtual")}


def _lower_priority(pid: int, nice: int) -> None:
    try:
        os.setpriority(os.PRIO_PROCESS, pid, min(19, os.getpriority(os.PRIO_PROCESS, 0) + nice))
    except (AttributeError, OSError) as e:  # not on this platform, or the child is gone already
        log.debug("could not lower the priority of worker %d: %s", pid, e)


def _kill(proc: subprocess.Popen) -> None:
    try:
        proc.kill()
    except ProcessLookupError:
        pass


def _describe_exit(returncode: int | None) -> str:
    if returncode is None:
        return "is still running"
    if returncode < 0:
        try:
            return f"was killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"was killed by signal {-returncode}"
    return f"exited with status {returncode}"
