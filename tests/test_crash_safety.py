"""Nothing a client was told is lost on a crash: kill -9 the server mid-run, restart it on the same data dir."""

from __future__ import annotations

import hashlib
import sqlite3
import time

from client_helpers import IMAGES, leftover_temp_files, submit, upload, wait_final

JOBS = 50


def test_kill_9_while_jobs_run_then_restart(make_server, tmp_path) -> None:
    data_dir = tmp_path / "data"
    srv = make_server(data_dir)
    with srv.client() as c:
        job_ids = []
        for i in range(JOBS):
            # Distinct inputs (a size parameter), so each job has an output of its own.
            file_id = upload(c, IMAGES / "typical_vehicle_biplane.png")["file_id"]
            job_ids.append(submit(c, "/mesh/generate",
                                  {"images": [file_id], "parameters": {"delay": 0.4, "grid": 4 + i}})["job_id"])
        deadline = time.monotonic() + 30
        while True:
            states = [c.get(f"/jobs/{j}").json()["status"] for j in job_ids]
            if states.count("succeeded") >= 5 and "running" in states:
                break
            assert time.monotonic() < deadline, states
            time.sleep(0.05)
    srv.kill()
    done_before = states.count("succeeded")
    assert done_before < JOBS, "the kill must land while jobs are still queued and running"

    db = sqlite3.connect(data_dir / "pocket3d.db")
    assert db.execute("SELECT count(*) FROM stages WHERE status = 'running'").fetchone()[0] > 0
    db.close()

    srv2 = make_server(data_dir)
    with srv2.client() as c:
        finals = [wait_final(c, j, timeout=120) for j in job_ids]
        assert [f["status"] for f in finals] == ["succeeded"] * JOBS, [f["error"] for f in finals]
        assert all(s["attempts"] == 1 for f in finals for s in f["stages"]), "the kill cost no stage an attempt"

        hashes = set()
        for f in finals:
            output = next(o for o in f["outputs"] if o["name"] == "model.glb")
            data = c.get(output["url"].removeprefix("/api/v1")).content
            assert hashlib.sha256(data).hexdigest() == output["sha256"]
            hashes.add(output["sha256"])
        assert len(hashes) == JOBS, "each job has its own output"

    srv2.stop()
    db = sqlite3.connect(data_dir / "pocket3d.db")
    interrupted = db.execute("SELECT count(*) FROM stages WHERE interruptions > 0").fetchone()[0]
    assert interrupted > 0, "some stage was interrupted by the kill and ran again"
    rows = db.execute("SELECT job_id, name, count(*) FROM outputs GROUP BY job_id, name").fetchall()
    assert all(n == 1 for _, _, n in rows)
    assert sum(1 for _, name, _ in rows if name == "model.glb") == JOBS, "one public output per job, no more"
    referenced = {r[0] for r in db.execute("SELECT sha256 FROM outputs UNION SELECT sha256 FROM files")}
    db.close()
    stored = {p.name for p in (data_dir / "artifacts").rglob("*") if p.is_file()}
    assert stored == referenced, "no blob is lost and none is left over by the killed attempts"
    assert leftover_temp_files(data_dir) == []


def test_three_kill_9s_during_one_short_job_leave_it_succeeded(make_server, tmp_path) -> None:
    """A server crash is not the stage's doing: it costs no attempt (max_attempts is 3, and it is killed three
    times while its model runs), and the job view says what happened."""
    data_dir = tmp_path / "data"
    srv = make_server(data_dir)
    with srv.client() as c:
        file_id = upload(c, IMAGES / "typical_vehicle_biplane.png")["file_id"]
        job_id = submit(c, "/mesh/generate", {"images": [file_id], "model_preference": "test_heightfield",
                                              "parameters": {"delay": 2, "steps": 20}})["job_id"]
    for _ in range(3):
        with srv.client() as c:
            deadline = time.monotonic() + 30
            while (job := c.get(f"/jobs/{job_id}").json())["stages"][0]["status"] != "running":
                assert time.monotonic() < deadline, job
                time.sleep(0.05)
        srv.kill()
        srv = make_server(data_dir)
    with srv.client() as c:
        job = wait_final(c, job_id, timeout=60)
    assert job["status"] == "succeeded", job["error"]
    assert job["stages"][0]["attempts"] == 1
    db = sqlite3.connect(data_dir / "pocket3d.db")
    assert db.execute("SELECT interruptions FROM stages WHERE job_id = ? AND idx = 0", (job_id,)).fetchone() == (3,)
    db.close()
