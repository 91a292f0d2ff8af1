"""The node scheduler on a real server: device worker subprocesses on virtual CPU devices, test models that take
real memory (tests/support/p3d_workermodels.py), crashes, out-of-memory errors, timeouts and cancels."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import psutil
import pytest
from client_helpers import submit, wait_final
from server import SUPPORT

MODELS = SUPPORT / "models-scheduler.yaml"
MB = 1024 * 1024


def _devices(memory: list[int]) -> dict[str, str]:
    return {"POCKET3D_GPU__VIRTUAL_DEVICES": json.dumps([{"id": f"vcpu{i}", "memory": m}
                                                        for i, m in enumerate(memory)]),
            "POCKET3D_GPU__MEMORY_BUFFER": "0", "POCKET3D_GPU__MAX_UTILIZATION": "1.0",
            "POCKET3D_GPU__AUTO_DETECT": "false", "POCKET3D_SCHEDULER__CONCURRENCY": "4"}


@pytest.fixture
def scheduler_server(make_server) -> Callable:
    def start(memory: list[int], **env: str):
        return make_server(models=MODELS, env={**_devices(memory), **env})
    return start


def _job(c: httpx.Client, model: str, **params) -> str:
    return submit(c, "/mesh/generate", {"text_prompt": "x", "model_preference": model, "parameters": params})["job_id"]


def _served(c: httpx.Client, job_id: str) -> dict:
    return c.get(f"/jobs/{job_id}/outputs/served.json").json()


def _worker_rss_mb(pid: int | None) -> float:
    if pid is None:
        return 0.0
    try:
        return psutil.Process(pid).memory_info().rss / MB
    except psutil.NoSuchProcess:
        return 0.0


def _finish_all(c: httpx.Client, job_ids: list[str], timeout: float, each: Callable[[], None] | None = None) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        if each:
            each()
        jobs = [c.get(f"/jobs/{j}").json() for j in job_ids]
        if all(j["status"] in ("succeeded", "failed", "cancelled") for j in jobs):
            return jobs
        assert time.monotonic() < deadline, [j["status"] for j in jobs]
        time.sleep(0.05)


def test_placement_keeps_every_device_within_its_budget_and_reuses_resident_models(scheduler_server) -> None:
    """Two devices of 700 MB; three models of 250-350 MB each, asked for in turn. No device ever holds more than
    its budget, by the scheduler's books or by the worker's real memory; a resident model serves the next stage
    of its kind without a reload."""
    srv = scheduler_server([700, 700])
    with srv.client() as c:
        jobs = [_job(c, m, seconds=0.3) for _ in range(6) for m in ("alloc_a", "alloc_b", "alloc_c")]
        peaks: dict[str, float] = {}

        def check() -> None:
            for d in c.get("/system/devices").json():
                assert d["scheduled_mb"] <= d["budget_mb"], d
                rss = _worker_rss_mb(d["worker_pid"])
                peaks[d["id"]] = max(peaks.get(d["id"], 0.0), rss)

        finals = _finish_all(c, jobs, timeout=120, each=check)
        assert all(j["status"] == "succeeded" for j in finals), [j["error"] for j in finals]
        # The worker process itself (interpreter, numpy) takes ~40 MB on top of what the models hold.
        assert all(peak <= 700 + 80 for peak in peaks.values()), peaks
        assert set(peaks) == {"vcpu0", "vcpu1"}, "both devices were used"
        served = [_served(c, j) for j in jobs]
        loads = {(s["pid"], s["load_number"]) for s in served}
        assert len(loads) < len(served) / 2, "most stages ran on a model already resident"


def test_a_flooded_model_gets_a_copy_on_each_device_within_their_memory(scheduler_server) -> None:
    """Replicas: two devices of 400 MB, one model of 300 MB (max_concurrent 2 per copy) asked for 12 times at
    once. Both devices load a copy and run its stages, two at a time each; neither device ever holds more than its
    budget, by the scheduler's books or by the worker's real memory."""
    srv = scheduler_server([400, 400])
    with srv.client() as c:
        jobs = [_job(c, "alloc_a", seconds=1.0) for _ in range(12)]
        peaks: dict[str, float] = {}
        copies: set[str] = set()
        most_running = 0

        def check() -> None:
            nonlocal most_running
            devices = c.get("/system/devices").json()
            for d in devices:
                assert d["scheduled_mb"] <= d["budget_mb"], d
                assert len(d["running_stages"]) <= 2, d  # max_concurrent is per copy
                peaks[d["id"]] = max(peaks.get(d["id"], 0.0), _worker_rss_mb(d["worker_pid"]))
                if "alloc_a" in d["resident_models"]:
                    copies.add(d["id"])
            most_running = max(most_running, sum(len(d["running_stages"]) for d in devices))

        finals = _finish_all(c, jobs, timeout=120, each=check)
        assert all(j["status"] == "succeeded" for j in finals), [j["error"] for j in finals]
        assert copies == {"vcpu0", "vcpu1"}, "a copy on each device"
        assert len({_served(c, j)["pid"] for j in jobs}) == 2, "both devices' workers ran stages"
        assert most_running > 2, "two copies ran more stages at once than one copy's max_concurrent"
        # The worker process itself (interpreter, numpy) takes ~40 MB on top of what the model holds.
        assert all(peak <= 400 + 80 for peak in peaks.values()), peaks


def test_eviction_weighs_reuse_not_recency(scheduler_server) -> None:
    """One device of 800 MB holds two of the three models. alloc_a is asked for often, alloc_c once and more
    recently; when alloc_b needs room, least-recently-used would evict alloc_a; pocket3d evicts alloc_c, which is
    as slow to load and less likely to be asked for again. (Eight asks, not four: the load times are measured, and a
    busy machine can make one 0.2 s load read several times another's.)"""
    srv = scheduler_server([800], POCKET3D_SCHEDULER__MODEL_IDLE_TIMEOUT="0")
    with srv.client() as c:
        for _ in range(8):
            assert wait_final(c, _job(c, "alloc_a"))["status"] == "succeeded"
        assert wait_final(c, _job(c, "alloc_c"))["status"] == "succeeded"
        (device,) = c.get("/system/devices").json()
        assert sorted(device["resident_models"]) == ["alloc_a", "alloc_c"]
        assert wait_final(c, _job(c, "alloc_b"))["status"] == "succeeded"
        (device,) = c.get("/system/devices").json()
        assert sorted(device["resident_models"]) == ["alloc_a", "alloc_b"]


def test_a_killed_worker_costs_attempts_not_jobs(scheduler_server) -> None:
    """SIGKILL the device worker twice while 50 jobs run: every job ends succeeded, or failed with WORKER_CRASHED
    after its attempts; none is left running, and the server answers throughout."""
    srv = scheduler_server([1200], POCKET3D_SCHEDULER__MAX_ATTEMPTS="2")
    with srv.client() as c:
        jobs = [_job(c, "alloc_a", seconds=0.3, steps=3) for _ in range(50)]
        kills = []

        def kill_now_and_then() -> None:
            assert c.get("/system/health").status_code == 200
            # one request, not one a job: a slow look at 40 jobs let all 50 finish between two looks
            done = len(c.get("/jobs", params={"status": "succeeded", "limit": 100}).json()["jobs"])
            if len(kills) < 2 and done >= 10 * (len(kills) + 1):
                (device,) = c.get("/system/devices").json()
                if device["worker_pid"] and device["running_stages"]:
                    os.kill(device["worker_pid"], signal.SIGKILL)
                    kills.append(device["worker_pid"])

        finals = _finish_all(c, jobs, timeout=180, each=kill_now_and_then)
        assert len(kills) == 2
        outcomes = {(j["status"], (j["error"] or {}).get("code")) for j in finals}
        assert outcomes <= {("succeeded", None), ("failed", "WORKER_CRASHED")}, outcomes
        retried = [j for j in finals if j["stages"][0]["attempts"] > 1]
        assert retried, "the stages running at a kill were tried again"
        (device,) = c.get("/system/devices").json()
        assert device["running_stages"] == [] and device["worker_pid"] not in kills


def test_out_of_memory_evicts_and_retries_once_then_fails(scheduler_server, tmp_path: Path) -> None:
    srv = scheduler_server([1000])
    with srv.client() as c:
        assert wait_final(c, _job(c, "alloc_a"))["status"] == "succeeded"  # something to evict
        marker = tmp_path / "failed-once"
        job = wait_final(c, _job(c, "oom_once", marker=str(marker)), timeout=60)
        # the first run failed (and left the marker), the retry succeeded; a full device is not the model's
        # failure, so the retry does not use up an attempt
        assert job["status"] == "succeeded" and marker.exists() and job["stages"][0]["attempts"] == 1
        (device,) = c.get("/system/devices").json()
        assert "alloc_a" not in device["resident_models"], "the other model was evicted before the retry"
        job = wait_final(c, _job(c, "always_oom"), timeout=60)
        assert job["status"] == "failed" and job["error"]["code"] == "OUT_OF_MEMORY"
        assert "always_oom" in job["error"]["message"] and "vcpu0" in job["error"]["message"]
        assert srv.log().count("always_oom ran out of memory") == 2, "tried twice: once more, not max_attempts"


def test_timeout_and_cancel_free_the_device(scheduler_server) -> None:
    srv = scheduler_server([1000], POCKET3D_SCHEDULER__JOB_TIMEOUT="2", POCKET3D_SCHEDULER__CANCEL_GRACE="1")
    with srv.client() as c:
        started = time.monotonic()
        job = wait_final(c, _job(c, "hanging"), timeout=30)
        assert job["status"] == "failed" and job["error"]["code"] == "TIMEOUT"
        assert "scheduler.job_timeout (2 s)" in job["error"]["message"]
        assert time.monotonic() - started < 10
        # a model that reports progress stops at its next report
        running = _job(c, "alloc_a", seconds=30, steps=300)
        while c.get(f"/jobs/{running}").json()["status"] != "running":
            time.sleep(0.05)
        assert c.post(f"/jobs/{running}/cancel").status_code in (200, 202)
        assert wait_final(c, running, timeout=10)["status"] == "cancelled"
        # a model that never reports is killed once cancel_grace has passed
        hung = _job(c, "hanging")
        while c.get(f"/jobs/{hung}").json()["status"] != "running":
            time.sleep(0.05)
        c.post(f"/jobs/{hung}/cancel")
        assert wait_final(c, hung, timeout=15)["status"] == "cancelled"
        (device,) = c.get("/system/devices").json()
        assert device["running_stages"] == []
        works_on = wait_final(c, _job(c, "alloc_a"), timeout=30)
        assert works_on["status"] == "succeeded", ("the device works on", works_on["error"])


def test_a_stage_stopped_while_its_model_loads_harms_no_other_stage(scheduler_server) -> None:
    """Cancelled during its model's load: cancelled, and the worker (with the other stage running in it) lives
    on. A load past load_timeout: TIMEOUT naming it, not a crash."""
    srv = scheduler_server([1000], POCKET3D_SCHEDULER__LOAD_TIMEOUT="4", POCKET3D_SCHEDULER__CANCEL_GRACE="1",
                           POCKET3D_SCHEDULER__MAX_ATTEMPTS="1")
    with srv.client() as c:
        neighbour = _job(c, "alloc_a", seconds=3, steps=30)
        while c.get(f"/jobs/{neighbour}").json()["progress"] == 0:
            time.sleep(0.05)
        (device,) = c.get("/system/devices").json()
        pid = device["worker_pid"]
        loading = _job(c, "medium_load")  # a 2 s load
        deadline = time.monotonic() + 20
        while "loading medium_load on vcpu0" not in srv.log():  # its load has begun
            assert time.monotonic() < deadline, srv.log()[-3000:]
            time.sleep(0.05)
        c.post(f"/jobs/{loading}/cancel")
        assert wait_final(c, loading, timeout=20)["status"] == "cancelled"
        assert wait_final(c, neighbour, timeout=20)["status"] == "succeeded"
        (device,) = c.get("/system/devices").json()
        assert device["worker_pid"] == pid, "nobody killed the worker"
        assert "medium_load" in device["resident_models"], "the load finished: the books count its memory"
        job = wait_final(c, _job(c, "slow_load"), timeout=30)  # a 6 s load
        assert job["status"] == "failed" and job["error"]["code"] == "TIMEOUT", job["error"]
        assert "scheduler.load_timeout (4 s)" in job["error"]["message"]


def test_a_graceful_stop_gives_running_stages_back(scheduler_server, make_server, tmp_path: Path) -> None:
    srv = scheduler_server([1000], POCKET3D_SCHEDULER__MAX_ATTEMPTS="1")
    with srv.client() as c:
        hung = _job(c, "hanging", seconds=5)
        busy = _job(c, "alloc_a", seconds=5, steps=50)
        while any(c.get(f"/jobs/{j}").json()["status"] != "running" for j in (hung, busy)):
            time.sleep(0.05)
    srv.stop()
    assert "requeued at shutdown" in srv.log() or "queued again" in srv.log()
    again = make_server(srv.data_dir, models=MODELS, env=_devices([1000]))
    with again.client() as c:
        for job_id in (hung, busy):
            job = wait_final(c, job_id, timeout=30)
            assert job["status"] == "succeeded", "given back with its attempt uncounted, so max_attempts=1 holds"


def test_a_job_under_way_between_two_stages_is_ranked_but_not_counted_as_a_job_in_the_queue() -> None:
    """What a user saw: one queued job shown as '#2 in the queue', because another job, running, had its next
    stage waiting ahead of it. Its work still counts in the seconds ahead (the ETA)."""
    from pocket3d.scheduler.base import queue_places
    from pocket3d.scheduler.policy import PendingStage

    def stage(stage_id: int, job_id: str) -> PendingStage:
        return PendingStage(stage_id=stage_id, job_id=job_id, model_id="m", feature="mesh_generation", priority=0,
                            submitted_at=0.0)

    places, tail = queue_places([stage(7, "job_running"), stage(3, "job_a"), stage(4, "job_b")], lambda m: 10.0,
                                under_way={7})
    assert places == {7: (1, 0.0), 3: (1, 10.0), 4: (2, 20.0)}
    assert tail == (3, 30.0), "a job queued since the last pass comes after the two waiting to start"


def test_a_high_priority_job_submitted_into_a_long_queue_starts_next(scheduler_server, tmp_path: Path) -> None:
    """Past scheduler LONG_QUEUE stages the node ranks the whole queue at most once a second; the rounds between
    plan from the top of that ranking with the stages queued since merged in. A job submitted then at priority 10
    must still start at the next free slot, ahead of 300 low-priority jobs that were ranked before it came."""
    from pocket3d.scheduler.node import LONG_QUEUE

    srv = scheduler_server([400], POCKET3D_SCHEDULER__MAX_JOBS_PER_OWNER="1000")
    release = tmp_path / "release"
    with srv.client() as c:
        try:
            holding = [_job(c, "alloc_a", hold_until=str(release)) for _ in range(2)]  # both slots of the one copy
            low = [submit(c, "/mesh/generate", {"text_prompt": "x", "model_preference": "alloc_a",
                                                "priority": -5})["job_id"] for _ in range(LONG_QUEUE + 44)]
            time.sleep(1.5)  # the long queue has been ranked whole
            urgent = submit(c, "/mesh/generate", {"text_prompt": "x", "model_preference": "alloc_a",
                                                  "priority": 10})["job_id"]
        finally:
            release.touch()
        finished = wait_final(c, urgent, timeout=60)
        assert finished["status"] == "succeeded", finished
        assert all(wait_final(c, j, timeout=60)["status"] == "succeeded" for j in holding)
        started_low = sorted(s for j in low if (s := c.get(f"/jobs/{j}").json()["started_at"]) is not None)
        # Two slots free up at once: the urgent job takes one, at most one low-priority job the other.
        assert len([s for s in started_low if s < finished["started_at"]]) <= 1, (finished["started_at"],
                                                                                  started_low[:4])
