"""What a client notices across the life of a server: graceful restarts, resuming events, estimates, CORS."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
from client_helpers import IMAGES, finish, follow_events, submit, upload, wait_final
from test_auth_isolation import AUTH, create_key


def test_graceful_stop_mid_job_requeues_it_without_using_an_attempt(make_server, tmp_path) -> None:
    data_dir = tmp_path / "data"
    srv = make_server(data_dir)
    with srv.client() as c:
        job_id = submit(c, "/mesh/generate", {"images": [upload(c, IMAGES / "T.png")["file_id"]],
                                              "parameters": {"delay": 3, "steps": 30}})["job_id"]
        while c.get(f"/jobs/{job_id}").json()["progress"] == 0:
            time.sleep(0.05)
    srv.stop()  # SIGTERM: uvicorn shuts down cleanly
    assert "requeued at shutdown" in srv.log() and "Application shutdown complete" in srv.log()
    assert srv.proc.returncode == 0, "a clean shutdown exits 0, not 143"
    with make_server(data_dir).client() as c:
        job = wait_final(c, job_id)
        assert job["status"] == "succeeded"
        assert job["stages"][0]["attempts"] == 1, "a graceful stop does not count as a failed attempt"


def test_events_resume_from_last_event_id(client: httpx.Client) -> None:
    file_id = upload(client, IMAGES / "T.png")["file_id"]
    job_id = finish(client, "/mesh/generate?wait=20", {"images": [file_id]})["job_id"]
    events = follow_events(client, job_id)
    assert [e for e, _ in events] == ["status"] and events[0][1]["status"] == "succeeded"
    with client.stream("GET", f"/jobs/{job_id}/events") as r:
        last_id = next(line for line in r.iter_lines() if line.startswith("id:")).split(":", 1)[1].strip()
    # Resuming at the final event's id: nothing newer will come, and the stream ends at once.
    with client.stream("GET", f"/jobs/{job_id}/events", headers={"Last-Event-ID": last_id}, timeout=5) as r:
        assert [line for line in r.iter_lines() if line.startswith("data:")] == []


def test_queue_position_and_eta_come_from_measured_stage_times(make_server, tmp_path: Path) -> None:
    srv = make_server(env={"POCKET3D_SCHEDULER__CONCURRENCY": "1"})
    release = tmp_path / "release"
    with srv.client() as c:
        def slow(**params: object) -> str:
            return submit(c, "/mesh/generate", {"images": [upload(c, IMAGES / "T.png")["file_id"]],
                                                "parameters": params})["job_id"]
        first = slow(delay=1)
        assert c.get(f"/jobs/{first}").json()["eta_seconds"] is None, "no evidence yet, no made-up number"
        measured = sum(s["seconds"] or 0.0 for s in wait_final(c, first)["stages"])
        # the running job holds its device until the test releases it, however slow the machine
        running, queued = slow(hold_until=str(release)), slow(delay=1)
        try:
            deadline = time.monotonic() + 30
            while c.get(f"/jobs/{running}").json()["status"] != "running":
                assert time.monotonic() < deadline
                time.sleep(0.05)
            while (job := c.get(f"/jobs/{queued}").json())["queue_position"] is None:  # until the node's next pass
                assert time.monotonic() < deadline and job["status"] == "queued", job
                time.sleep(0.05)
            assert job["status"] == "queued" and job["queue_position"] == 1
            # its own stages as measured (the model's 1 s at least), plus what is left of the running job's
            assert 1.0 <= job["eta_seconds"] <= 2 * measured + 1.0, (job, measured)
            assert c.get(f"/jobs/{running}").json()["queue_position"] is None
        finally:
            release.touch()
        assert wait_final(c, queued)["status"] == "succeeded"


def test_cors_allows_only_configured_origins(make_server) -> None:
    srv = make_server(env={"POCKET3D_SERVER__CORS_ORIGINS": '["https://studio.example"]',
                           "POCKET3D_SERVER__MAX_REQUEST_SIZE": "1MB"})
    preflight = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type"}
    ok = httpx.options(f"{srv.url}/api/v1/mesh/generate", headers={"Origin": "https://studio.example", **preflight})
    assert ok.status_code == 200 and ok.headers["access-control-allow-origin"] == "https://studio.example"
    assert "access-control-allow-credentials" not in ok.headers
    bad = httpx.options(f"{srv.url}/api/v1/mesh/generate", headers={"Origin": "https://evil.example", **preflight})
    assert "access-control-allow-origin" not in bad.headers
    # An error answered before the app runs is still readable by the page that asked.
    big = httpx.post(f"{srv.url}/api/v1/mesh/generate", content=b"{" + b" " * 2_000_000 + b"}",
                     headers={"Origin": "https://studio.example", "Content-Type": "application/json"})
    assert big.status_code == 413 and big.json()["error_code"] == "REQUEST_TOO_LARGE"
    assert big.headers["access-control-allow-origin"] == "https://studio.example"


def test_an_admin_key_sees_every_owner(make_server, tmp_path) -> None:
    data_dir = tmp_path / "data"
    user, admin = create_key(data_dir, "dana"), create_key(data_dir, "ops", role="admin")
    srv = make_server(data_dir, env=AUTH)
    with srv.client(user) as u, srv.client(admin) as a:
        job_id = finish(u, "/mesh/generate?wait=20", {"images": [upload(u, IMAGES / "T.png")["file_id"]]})["job_id"]
        assert a.get(f"/jobs/{job_id}").status_code == 200
        assert job_id in [j["job_id"] for j in a.get("/jobs").json()["jobs"]]
