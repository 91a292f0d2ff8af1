"""A full disk is the server's trouble, never the user's (issue 11). RLIMIT_FSIZE on the running server (set from
outside with prlimit) stands in for a full disk: every write it makes past the limit fails with EFBIG, as writes
to a full disk fail with ENOSPC."""

from __future__ import annotations

import resource
import time

from client_helpers import IMAGES, finish, submit, upload, wait_final

SOFT_UNLIMITED = resource.RLIM_INFINITY


def _limit_writes(pid: int, size: int) -> None:
    """Lower the server's soft limit on file size (the hard limit stays, so it can be raised again)."""
    _, hard = resource.prlimit(pid, resource.RLIMIT_FSIZE)
    resource.prlimit(pid, resource.RLIMIT_FSIZE, (size if size is not None else hard, hard))


def test_a_full_disk_answers_503_says_not_ready_and_charges_no_attempt(make_server, tmp_path) -> None:
    srv = make_server(tmp_path / "data", piped_log=True)
    pid = srv.proc.pid
    with srv.client() as c:
        image = upload(c, IMAGES / "T.png")["file_id"]
        # A job whose model is running when the disk fills: its end cannot be recorded.
        job_id = submit(c, "/mesh/generate", {"images": [image], "model_preference": "test_heightfield",
                                              "parameters": {"delay": 1.5, "steps": 15}})["job_id"]
        deadline = time.monotonic() + 30
        while c.get(f"/jobs/{job_id}").json()["stages"][0]["status"] != "running":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        _limit_writes(pid, 1)
        try:
            refused = [
                c.post("/files", files={"file": ("T.png", (IMAGES / "T.png").read_bytes(), "image/png")}),
                c.post("/mesh/generate", json={"images": [image], "model_preference": "test_heightfield"}),
            ]
            for r in refused:
                assert r.status_code == 503, r.text
                assert r.json()["error_code"] == "STORAGE_UNAVAILABLE"
                assert int(r.headers["Retry-After"]) > 0
            ready = c.get("/system/ready")
            assert ready.status_code == 503 and any("storage unavailable" in reason
                                                    for reason in ready.json()["details"]["reasons"]), ready.text
            assert c.get(f"/jobs/{job_id}").status_code == 200, "reads still work"
            deadline = time.monotonic() + 30
            while f"job {job_id} stage 0: storage unavailable" not in srv.log():  # its end cannot be written
                assert time.monotonic() < deadline, srv.log()[-3000:]
                time.sleep(0.1)
        finally:
            _limit_writes(pid, None)

        deadline = time.monotonic() + 30
        while (ready := c.get("/system/ready")).status_code != 200:
            assert time.monotonic() < deadline, ready.text
            time.sleep(0.2)
        job = wait_final(c, job_id, timeout=60)
        assert job["status"] == "succeeded", job["error"]
        assert [s["attempts"] for s in job["stages"]] == [1, 1], "the re-run after the full disk was not charged"
        again = finish(c, "/mesh/generate?wait=20", {"images": [upload(c, IMAGES / "T.png")["file_id"]],
                                                     "model_preference": "test_heightfield"})
        assert again["status"] == "succeeded"
    log = srv.log()
    assert "storage unavailable" in log
    assert "Traceback" not in log, log[-3000:]
