"""The node scheduler survives what goes wrong around a model: hangs past job_timeout, a full disk."""

from __future__ import annotations

import errno
import time

from client_helpers import IMAGES, submit, upload, wait_final
from server import SUPPORT

from pocket3d.config import load_settings
from pocket3d.jobs import EXPORT_STAGE, JobStatus, NewJob, NewStage
from pocket3d.jobs import transitions as tr
from pocket3d.node import Node


def test_a_stage_that_hangs_without_reporting_fails_with_timeout(make_server) -> None:
    srv = make_server(env={"POCKET3D_SCHEDULER__JOB_TIMEOUT": "1", "POCKET3D_SCHEDULER__LEASE_SECONDS": "1.5"})
    with srv.client() as c:
        job = submit(c, "/mesh/generate", {"images": [upload(c, IMAGES / "T.png")["file_id"]],
                                           "parameters": {"delay": 30, "steps": 1}})
        deadline = time.monotonic() + 30
        while c.get(f"/jobs/{job['job_id']}").json()["status"] == "queued":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        running_since = time.monotonic()
        final = wait_final(c, job["job_id"], timeout=30)
        assert final["status"] == "failed" and final["error"]["code"] == "TIMEOUT"
        assert "scheduler.job_timeout (1 s)" in final["error"]["message"]
        assert time.monotonic() - running_since < 15, "failed by the watchdog, not when the model returned (30 s)"
        # the device works on: the next job runs on a fresh worker (its start and load not counted in its 1 s)
        follow = submit(c, "/mesh/generate", {"images": [upload(c, IMAGES / "T.png")["file_id"]]})
        assert wait_final(c, follow["job_id"])["status"] == "succeeded"
        assert c.get(f"/jobs/{job['job_id']}").json()["status"] == "failed", "the hung stage's end stays"


def test_a_full_disk_around_a_stage_is_retried_and_the_worker_lives_on(tmp_path, monkeypatch) -> None:
    settings = load_settings(SUPPORT / "system.yaml", data_dir=tmp_path / "data",
                             models_file=SUPPORT / "models.yaml")
    monkeypatch.syspath_prepend(str(SUPPORT))
    monkeypatch.setenv("PYTHONPATH", str(SUPPORT))  # for the device worker process, which loads the test model
    node = Node(settings)
    real_temp_dir = node.artifacts.temp_dir
    failures = []

    def temp_dir_on_a_disk_that_fills_up_once(prefix: str):
        if not failures:
            failures.append(prefix)
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_temp_dir(prefix)

    monkeypatch.setattr(node.artifacts, "temp_dir", temp_dir_on_a_disk_that_fills_up_once)
    node.start()
    try:
        jobs = [tr.submit(node.store, NewJob(owner_id="o", feature="mesh_generation", model_id="test_failing",
                                             stages=[NewStage("generate_mesh", "test_failing"),
                                                     NewStage(EXPORT_STAGE, None, {"format": "glb"})],
                                             request={}),
                          queue_size=100, max_attempts=3, now=time.time()) for _ in range(2)]
        node.scheduler.wake()
        deadline = time.monotonic() + 15
        while any(not node.store.get_job(j).status.is_final for j in jobs):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        finals = [node.store.get_job(j) for j in jobs]
        # the test model always fails: reaching its own MODEL_ERROR proves the stage was retried after ENOSPC
        assert all(j.status == JobStatus.FAILED and j.error_code == "MODEL_ERROR" for j in finals)
        # ... and the full disk, not the stage's doing, cost it no attempt
        assert sorted(j.stages[0].attempts for j in finals) == [1, 1] and failures
        assert all(th.is_alive() for th in node.scheduler._threads), "no worker thread died"
    finally:
        node.stop()
