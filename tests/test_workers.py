"""Device worker processes: real subprocesses on a virtual CPU device, running test models that take real memory,
run out of it, crash their process or hang (tests/support/p3d_workermodels.py)."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from pocket3d.models.spec import Device, Feature, ModelSpec, RunInputs
from pocket3d.workers import DeviceWorker, StageRequest, StageResult, WorkerUnavailable

SUPPORT = Path(__file__).parent / "support"
MODELS = "p3d_workermodels"
MB = 1024 * 1024
_stage_ids = itertools.count(1)


class Recorder:
    """The callbacks a scheduler would give a worker, recording what they were told."""

    def __init__(self) -> None:
        self.results: dict[int, StageResult] = {}
        self.progress: dict[int, list[float]] = {}
        self.crashes: list[tuple[str, list[int]]] = []
        self.order: list[tuple[str, int]] = []  # ("progress"|"result", stage id) as they came
        self._changed = threading.Condition()

    def on_progress(self, stage_id: int, fraction: float, message: str | None) -> None:
        with self._changed:
            self.progress.setdefault(stage_id, []).append(fraction)
            self.order.append(("progress", stage_id))
            self._changed.notify_all()

    def on_result(self, result: StageResult) -> None:
        with self._changed:
            assert result.stage_id not in self.results, "a stage was reported twice"
            self.results[result.stage_id] = result
            self.order.append(("result", result.stage_id))
            self._changed.notify_all()

    def on_crash(self, reason: str, stage_ids: list[int]) -> None:
        with self._changed:
            self.crashes.append((reason, stage_ids))
            self._changed.notify_all()

    def wait(self, predicate, timeout: float = 10.0) -> bool:
        with self._changed:
            return self._changed.wait_for(predicate, timeout)

    def result(self, stage_id: int, timeout: float = 10.0) -> StageResult:
        assert self.wait(lambda: stage_id in self.results, timeout), f"no result for stage {stage_id}"
        return self.results[stage_id]


@pytest.fixture
def device() -> Device:
    return Device(id="vcpu0", kind="cpu", name="virtual CPU device (2048 MB)", memory_total=2048, virtual=True)


@pytest.fixture
def worker(device: Device) -> Iterator[tuple[DeviceWorker, Recorder]]:
    recorder = Recorder()
    # cpu_nice=0 here and below: as tests/support/system.yaml says, the suite's programs share two cores, and a
    # nice-10 worker's stage waited past the test's 10 s beside one busy program at nice 0.
    handle = DeviceWorker(device, on_progress=recorder.on_progress, on_result=recorder.on_result,
                          on_crash=recorder.on_crash, env={"PYTHONPATH": str(SUPPORT)}, budget_mb=2048, cpu_nice=0)
    handle.start()
    yield handle, recorder
    handle.stop(timeout=5)


def spec(model_id: str, load_mb: float = 0, max_concurrent: int = 1) -> ModelSpec:
    return ModelSpec(id=model_id, feature=Feature.MESH_GENERATION, supported_inputs=frozenset({"image"}),
                     supported_outputs=("glb",), max_concurrent=max_concurrent, options={"load_mb": load_mb})


def stage(tmp_path: Path, model_id: str, adapter: str, params: dict | None = None, load_mb: float = 0,
          **inputs) -> StageRequest:
    stage_id = next(_stage_ids)
    work = tmp_path / f"stage-{stage_id}"
    work.mkdir()
    adapter = adapter if ":" in adapter else f"{MODELS}:{adapter}"
    return StageRequest(stage_id=stage_id, model_id=model_id, adapter=adapter, spec=spec(model_id, load_mb),
                        inputs=RunInputs(work_dir=work, **inputs), params=params or {})


def rss_mb(pid: int) -> float:
    return psutil.Process(pid).memory_info().rss / MB


def served(result: StageResult) -> dict:
    assert result.files is not None, result.message
    return json.loads(result.files["served"].read_text())


# -- loading, running, unloading ------------------------------------------------------------------------------


def test_load_run_unload_measures_the_memory_the_model_takes(worker, tmp_path: Path) -> None:
    handle, rec = worker
    loaded = handle.load("test_alloc", f"{MODELS}:AllocatingTestModel", spec("test_alloc", load_mb=300))
    assert loaded.ok, loaded.message
    assert loaded.memory_mb == pytest.approx(300, abs=15)
    assert handle.resident == {"test_alloc": loaded.memory_mb}

    request = stage(tmp_path, "test_alloc", "AllocatingTestModel", {"run_mb": 200, "seconds": 0.3}, load_mb=300)
    handle.run(request)
    result = rec.result(request.stage_id)
    assert result.error_code is None, result.message
    assert result.files["mesh"].parent == request.inputs.work_dir
    assert result.files["mesh"].read_bytes()[:4] == b"glTF"
    assert served(result)["pid"] == handle.pid
    # what the load holds plus what the run added at its peak
    assert result.peak_memory_mb == pytest.approx(500, abs=25)
    assert result.load_seconds is None  # it was resident
    fractions = rec.progress[request.stage_id]
    assert fractions and fractions == sorted(fractions)

    unloaded = handle.unload("test_alloc")
    assert unloaded.ok and not unloaded.restarted
    assert handle.resident == {}


def test_a_resident_model_is_reused_and_a_missing_one_is_loaded_by_its_stage(worker, tmp_path: Path) -> None:
    handle, rec = worker
    first = stage(tmp_path, "test_alloc", "AllocatingTestModel", load_mb=50)
    handle.run(first)  # not loaded yet: the stage loads it
    one = rec.result(first.stage_id)
    assert one.error_code is None, one.message
    assert one.load_seconds is not None
    assert handle.resident.keys() == {"test_alloc"}

    second = stage(tmp_path, "test_alloc", "AllocatingTestModel", load_mb=50)
    handle.run(second)
    two = rec.result(second.stage_id)
    assert two.error_code is None and two.load_seconds is None
    assert served(two)["load_number"] == served(one)["load_number"] == 1
    assert served(two)["pid"] == served(one)["pid"]


def test_unloading_gives_the_memory_back_to_the_system(worker) -> None:
    handle, _ = worker
    pid = handle.pid
    # Load and drop an empty model first: the modules a load imports stay, and are not the model's memory.
    assert handle.load("empty", f"{MODELS}:AllocatingTestModel", spec("empty", load_mb=0)).ok
    assert handle.unload("empty").ok
    before = rss_mb(pid)
    assert handle.load("big", f"{MODELS}:AllocatingTestModel", spec("big", load_mb=300)).ok
    assert rss_mb(pid) > before + 280
    result = handle.unload("big")
    assert result.ok and not result.restarted
    assert result.returned_mb == pytest.approx(300, abs=20)
    assert handle.pid == pid  # the same process gave it back, no restart needed
    assert rss_mb(pid) < before + 20


def test_memory_an_unload_cannot_return_is_returned_by_restarting_the_worker(worker, tmp_path: Path) -> None:
    handle, rec = worker
    old_pid = handle.pid
    assert handle.load("leaky", f"{MODELS}:LeakyTestModel", spec("leaky", load_mb=300)).ok
    result = handle.unload("leaky")
    assert result.ok and result.restarted
    assert handle.pid != old_pid and not psutil.pid_exists(old_pid)
    assert rss_mb(handle.pid) < 100 and handle.resident == {}
    request = stage(tmp_path, "test_alloc", "AllocatingTestModel")
    handle.run(request)
    assert rec.result(request.stage_id).error_code is None and not rec.crashes


def test_stages_of_different_models_overlap_and_one_model_runs_one_at_a_time(worker, tmp_path: Path) -> None:
    handle, rec = worker
    slow = {"seconds": 0.6, "steps": 6}
    a1 = stage(tmp_path, "model_a", "AllocatingTestModel", slow)
    b1 = stage(tmp_path, "model_b", "AllocatingTestModel", slow)
    a2 = stage(tmp_path, "model_a", "AllocatingTestModel", slow)
    for request in (a1, b1, a2):
        handle.run(request)
    for request in (a1, b1, a2):
        assert rec.result(request.stage_id).error_code is None
    order = rec.order
    # model_b's stage made progress while model_a's first stage was still running...
    assert order.index(("progress", b1.stage_id)) < order.index(("result", a1.stage_id))
    # ...but model_a's second stage (max_concurrent 1) started only after its first ended
    assert order.index(("result", a1.stage_id)) < order.index(("progress", a2.stage_id))


def test_peak_is_measured_by_sampling_where_the_high_water_mark_cannot_be_reset(device, tmp_path: Path) -> None:
    rec = Recorder()
    env = {"PYTHONPATH": str(SUPPORT), "POCKET3D_WORKER_RSS_SAMPLING": "1"}
    with DeviceWorker(device, on_progress=rec.on_progress, on_result=rec.on_result, on_crash=rec.on_crash,
                      env=env, cpu_nice=0) as handle:
        request = stage(tmp_path, "test_alloc", "AllocatingTestModel", {"run_mb": 200, "seconds": 0.3}, load_mb=100)
        handle.run(request)
        result = rec.result(request.stage_id)
    assert result.error_code is None, result.message
    assert result.peak_memory_mb == pytest.approx(300, abs=25)


# -- failures inside the model -------------------------------------------------------------------------------


def test_memory_error_is_out_of_memory_naming_model_device_and_memory(worker, tmp_path: Path) -> None:
    handle, rec = worker
    assert handle.load("holder", f"{MODELS}:AllocatingTestModel", spec("holder", load_mb=100)).ok
    marker = tmp_path / "oom-once"
    first = stage(tmp_path, "test_oom_once", "OomOnceTestModel", {"marker": str(marker)})
    handle.run(first)
    failed = rec.result(first.stage_id)
    assert failed.error_code == "OUT_OF_MEMORY"
    message = failed.message
    assert "test_oom_once" in message and "vcpu0" in message and "budget 2048 MB" in message
    assert "in use by 2 model(s)" in message and "holder 100 MB" in message

    retry = stage(tmp_path, "test_oom_once", "OomOnceTestModel", {"marker": str(marker)})
    handle.run(retry)  # the same process, as an evict-and-retry would
    assert rec.result(retry.stage_id).error_code is None
    assert handle.unload("holder").ok

    always = [stage(tmp_path, "test_oom_always", "AlwaysOomTestModel") for _ in range(2)]
    for request in always:
        handle.run(request)
        assert rec.result(request.stage_id).error_code == "OUT_OF_MEMORY"
    assert handle.alive and not rec.crashes


def test_a_model_error_and_rejected_input_fail_the_stage_not_the_worker(worker, tmp_path: Path) -> None:
    handle, rec = worker
    failing = stage(tmp_path, "test_failing", "p3d_testmodels:FailingTestModel")
    rejected = stage(tmp_path, "test_heightfield", "p3d_testmodels:HeightfieldTestModel")  # no image given
    bad_params = stage(tmp_path, "test_alloc", "AllocatingTestModel", {"no_such_param": 1})
    for request in (failing, rejected, bad_params):
        handle.run(request)
    assert rec.result(failing.stage_id).error_code == "MODEL_ERROR"
    assert "failed on purpose" in rec.results[failing.stage_id].message
    assert rec.result(rejected.stage_id).error_code == "INVALID_INPUT"
    assert rec.result(bad_params.stage_id).error_code == "INVALID_INPUT"
    assert "no_such_param" in rec.results[bad_params.stage_id].message

    missing = handle.load("nowhere", f"{MODELS}:NoSuchModel", spec("nowhere"))
    assert not missing.ok and missing.error_code == "MODEL_ERROR" and "NoSuchModel" in missing.message
    assert handle.alive and not rec.crashes


# -- the process dies -----------------------------------------------------------------------------------------


def test_sigkill_during_a_run_reports_the_running_stage_at_once_and_restart_works(worker, tmp_path: Path) -> None:
    handle, rec = worker
    request = stage(tmp_path, "test_alloc", "AllocatingTestModel", {"seconds": 30, "steps": 300}, load_mb=50)
    handle.run(request)
    assert rec.wait(lambda: request.stage_id in rec.progress)
    pid = handle.pid
    os.kill(pid, signal.SIGKILL)
    assert rec.wait(lambda: rec.crashes, timeout=1.0), "the death was not noticed within a second"
    reason, lost = rec.crashes[0]
    assert lost == [request.stage_id]
    assert f"worker for device vcpu0 (pid {pid}) was killed by SIGKILL" in reason
    assert request.stage_id not in rec.results  # reported once, as lost, never also as a result
    assert not handle.alive and handle.resident == {}
    with pytest.raises(WorkerUnavailable):
        handle.run(stage(tmp_path, "test_alloc", "AllocatingTestModel"))

    assert handle.restart() == []
    assert handle.alive and handle.pid != pid and handle.resident == {}
    again = stage(tmp_path, "test_alloc", "AllocatingTestModel", load_mb=50)
    handle.run(again)
    result = rec.result(again.stage_id)
    assert result.error_code is None and result.load_seconds is not None  # loaded afresh in the new process


def test_a_death_is_noticed_even_when_a_forked_process_keeps_the_pipe_open(worker, tmp_path: Path) -> None:
    handle, rec = worker
    request = stage(tmp_path, "test_fork", "ForkingTestModel")
    handle.run(request)
    assert rec.wait(lambda: request.stage_id in rec.progress)
    grandchild = int((request.inputs.work_dir / "grandchild.pid").read_text())
    try:
        assert psutil.pid_exists(grandchild)
        os.kill(handle.pid, signal.SIGKILL)
        assert rec.wait(lambda: rec.crashes, timeout=1.0), "the death was not noticed within a second"
        assert rec.crashes[0][1] == [request.stage_id]
    finally:
        os.kill(grandchild, signal.SIGKILL)


@pytest.mark.parametrize("how, signal_name", [("abort", "SIGABRT"), ("segfault", "SIGSEGV")])
def test_a_model_that_crashes_its_process_is_reported_as_a_crash(worker, tmp_path: Path, how: str,
                                                                 signal_name: str) -> None:
    handle, rec = worker
    bystander = stage(tmp_path, "test_alloc", "AllocatingTestModel", {"seconds": 30, "steps": 300})
    handle.run(bystander)
    crashing = stage(tmp_path, "test_crash", "CrashingTestModel", {"how": how})
    handle.run(crashing)
    assert rec.wait(lambda: rec.crashes)
    reason, lost = rec.crashes[0]
    assert f"was killed by {signal_name}" in reason
    assert sorted(lost) == sorted([bystander.stage_id, crashing.stage_id])  # both ran in the dead process
    assert not rec.results

    handle.restart()
    after = stage(tmp_path, "test_alloc", "AllocatingTestModel")
    handle.run(after)
    assert rec.result(after.stage_id).error_code is None


def test_a_restart_hands_back_the_stages_it_ends(worker, tmp_path: Path) -> None:
    handle, rec = worker
    request = stage(tmp_path, "test_alloc", "AllocatingTestModel", {"seconds": 30, "steps": 300})
    handle.run(request)
    assert rec.wait(lambda: request.stage_id in rec.progress)
    assert handle.restart() == [request.stage_id]
    assert not rec.crashes and request.stage_id not in rec.results  # reported to the caller only


# -- stopping a stage ------------------------------------------------------------------------------------------


def test_cancel_stops_a_running_stage_and_the_model_stays_resident(worker, tmp_path: Path) -> None:
    handle, rec = worker
    request = stage(tmp_path, "test_alloc", "AllocatingTestModel", {"run_mb": 100, "seconds": 30, "steps": 300},
                    load_mb=50)
    handle.run(request)
    assert rec.wait(lambda: request.stage_id in rec.progress)
    handle.cancel(request.stage_id)
    result = rec.result(request.stage_id, timeout=5)
    assert result.error_code == "CANCELLED"
    assert handle.running == [] and "test_alloc" in handle.resident

    after = stage(tmp_path, "test_alloc", "AllocatingTestModel", load_mb=50)
    handle.run(after)
    assert rec.result(after.stage_id).load_seconds is None


def test_a_load_past_its_timeout_kills_the_worker(worker, tmp_path: Path) -> None:
    handle, rec = worker
    slow = spec("slow_loader")
    slow.options["load_seconds"] = 60
    loaded = handle.load("slow_loader", f"{MODELS}:AllocatingTestModel", slow, timeout=0.5)
    assert not loaded.ok and loaded.error_code == "TIMEOUT"
    assert rec.wait(lambda: rec.crashes)
    assert "loading slow_loader took longer than 0.5 s" in rec.crashes[0][0]
    handle.restart()
    assert handle.load("test_alloc", f"{MODELS}:AllocatingTestModel", spec("test_alloc")).ok


def test_a_hung_stage_ignores_cancel_and_is_stopped_by_kill(worker, tmp_path: Path) -> None:
    handle, rec = worker
    request = stage(tmp_path, "test_hang", "HangingTestModel")
    handle.run(request)
    assert rec.wait(lambda: request.stage_id in rec.progress)  # inside the model now
    handle.cancel(request.stage_id)
    assert not rec.wait(lambda: request.stage_id in rec.results, timeout=1.0)  # it never checks for cancel
    handle.kill("stage exceeded scheduler.job_timeout")
    assert rec.wait(lambda: rec.crashes)
    reason, lost = rec.crashes[0]
    assert lost == [request.stage_id]
    assert "SIGKILL" in reason and "stage exceeded scheduler.job_timeout" in reason

    handle.restart()
    assert handle.running == [] and handle.alive


def test_the_worker_exits_when_the_server_process_dies(device, tmp_path: Path) -> None:
    script = tmp_path / "server.py"
    script.write_text(
        "import os, sys\n"
        "from pocket3d.models.spec import Device\n"
        "from pocket3d.workers import DeviceWorker\n"
        f"w = DeviceWorker(Device(**{device.__dict__!r}), on_progress=print, on_result=print, on_crash=print, cpu_nice=0)\n"
        "w.start()\n"
        "print(w.pid, flush=True)\n"
        "sys.stdin.read()\n")
    server = subprocess.Popen([sys.executable, str(script)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        child_pid = int(server.stdout.readline())
        assert psutil.pid_exists(child_pid)
        server.kill()  # no stop(), no clean-up: as a crashed server
        server.wait(10)
        assert _gone(child_pid, within=5.0), "the worker outlived the server"
    finally:
        server.kill()


def _gone(pid: int, within: float) -> bool:
    """The process has exited (a zombie nobody reaped counts: it holds no memory)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.05)
    return False


def test_stop_cancels_running_stages_and_leaves_no_process(device, tmp_path: Path) -> None:
    rec = Recorder()
    handle = DeviceWorker(device, on_progress=rec.on_progress, on_result=rec.on_result, on_crash=rec.on_crash,
                          env={"PYTHONPATH": str(SUPPORT)}, cpu_nice=0)
    handle.start()
    pid = handle.pid
    request = stage(tmp_path, "test_alloc", "AllocatingTestModel", {"seconds": 30, "steps": 300}, load_mb=50)
    handle.run(request)
    assert rec.wait(lambda: request.stage_id in rec.progress)
    hung = stage(tmp_path, "test_hang", "HangingTestModel")
    handle.run(hung)
    assert rec.wait(lambda: hung.stage_id in rec.progress)
    lost = handle.stop(timeout=3)
    assert rec.results[request.stage_id].error_code == "CANCELLED"
    assert lost == [hung.stage_id]  # it could not be cancelled, so it is handed back
    assert not rec.crashes
    assert not psutil.pid_exists(pid)
    assert not handle.alive and handle.pid is None


def test_the_cpu_and_export_workers_run_below_the_server_by_gpu_cpu_worker_nice(tmp_path: Path) -> None:
    """Requests come first on a busy machine (nice 10 by default); an operator whose cores are shared with other
    programs at normal priority sets less, and the models are not starved by them."""
    from client_helpers import IMAGES, finish, upload
    from server import ServerProcess

    for nice in (10, 0):
        srv = ServerProcess(tmp_path / f"nice{nice}" / "data", env={"POCKET3D_GPU__CPU_WORKER_NICE": str(nice)})
        srv.start()
        try:
            with srv.client() as c:  # a job makes both workers: the CPU device's and the export stage's
                assert finish(c, "/mesh/generate?wait=30", {"images": [upload(c, IMAGES / "T.png")["file_id"]]}
                              )["status"] == "succeeded"
            server = psutil.Process(srv.proc.pid)
            workers = [p for p in server.children() if "pocket3d.workers.child" in " ".join(p.cmdline())]
            assert len(workers) == 2, [p.cmdline() for p in server.children()]
            assert {p.nice() for p in workers} == {min(19, server.nice() + nice)}
        finally:
            srv.stop()
