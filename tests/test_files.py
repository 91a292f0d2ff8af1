"""Uploads live as long as they promise: usable by any number of their owner's jobs until expires_at, then 410;
deleted at their owner's word (404), while a job that took one keeps its blob until the job ends."""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path

import httpx
import numpy as np
from client_helpers import IMAGES, finish, submit, upload, wait_final
from PIL import Image
from test_retention import blobs


def _until(condition, timeout: float = 15.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_one_upload_serves_jobs_one_after_another(client: httpx.Client) -> None:
    info = upload(client, IMAGES / "typical_humanoid_block_robot.png")
    for _ in range(3):
        job = finish(client, "/mesh/generate?wait=20", {"images": [info["file_id"]]})
        assert job["status"] == "succeeded", job
    again = client.get(f"/files/{info['file_id']}")
    assert again.status_code == 200 and again.json()["expires_at"] == info["expires_at"]


def test_an_upload_expires_at_its_expires_at_but_not_under_a_running_job(make_server, tmp_path: Path) -> None:
    srv = make_server(env={"POCKET3D_STORAGE__FILE_LIFETIME": "2", "POCKET3D_SCHEDULER__CLEANUP_INTERVAL": "1"})
    release = tmp_path / "release"
    with srv.client() as c:
        used = upload(c, IMAGES / "T.png")
        # the job runs until the test releases it, however slow the machine
        slow = submit(c, "/mesh/generate", {"images": [used["file_id"]], "parameters": {"hold_until": str(release)}})
        idle = upload(c, IMAGES / "typical_misc_crate.png")
        for info in (used, idle):
            created, expires = (datetime.fromisoformat(info[k]).timestamp() for k in ("created_at", "expires_at"))
            assert round(expires - created, 3) == 2, "storage.file_lifetime"
        time.sleep(max(0.0, expires - time.time()) + 0.1)  # a lifetime can only be waited out (idle's is later)

        for file_id in (used["file_id"], idle["file_id"]):
            r = c.get(f"/files/{file_id}")
            assert r.status_code == 410 and r.json()["error_code"] == "FILE_EXPIRED", r.text
            assert "POST /api/v1/files" in r.json()["hint"]
        r = c.post("/mesh/generate", json={"images": [idle["file_id"]]})
        assert r.status_code == 410 and r.json()["error_code"] == "FILE_EXPIRED", r.text
        assert r.json()["details"]["field"] == "images[0]"
        assert c.get("/files").json()["files"] == []

        assert c.get(f"/jobs/{slow['job_id']}").json()["status"] in ("queued", "running")
        assert used["sha256"] in blobs(srv.data_dir), "the running job keeps its input's blob past expires_at"
        _until(lambda: idle["sha256"] not in blobs(srv.data_dir), what="the retention sweep")
        release.touch()
        assert wait_final(c, slow["job_id"])["status"] == "succeeded"
        _until(lambda: used["sha256"] not in blobs(srv.data_dir), what="the blob freed after its job")
        assert c.get(f"/files/{used['file_id']}").json()["error_code"] == "FILE_EXPIRED", "the tombstone stays"


def _unique_png(tmp_path: Path, name: str) -> Path:
    """An image no other test uploads: blobs are stored by content, so a shared server's other uploads of the same
    bytes would keep the blob."""
    rgb = np.random.default_rng().integers(0, 255, (32, 32, 3), dtype=np.uint8)
    path = tmp_path / name
    Image.fromarray(rgb).save(path)
    return path


def test_delete_frees_the_blob_unless_a_job_holds_it(client: httpx.Client, server, tmp_path: Path) -> None:
    lone = upload(client, _unique_png(tmp_path, "lone.png"))
    assert lone["sha256"] in blobs(server.data_dir)
    r = client.delete(f"/files/{lone['file_id']}")
    assert r.status_code == 204 and r.content == b""
    assert lone["sha256"] not in blobs(server.data_dir)
    for r in (client.get(f"/files/{lone['file_id']}"), client.delete(f"/files/{lone['file_id']}"),
              client.post("/mesh/generate", json={"images": [lone["file_id"]]})):
        assert r.status_code == 404 and r.json()["error_code"] == "FILE_NOT_FOUND", r.text

    held = upload(client, _unique_png(tmp_path, "held.png"))
    twin = upload(client, tmp_path / "held.png")  # the same bytes: one blob, two uploads
    release = tmp_path / "release"
    job = submit(client, "/mesh/generate", {"images": [held["file_id"]], "parameters": {"hold_until": str(release)}})
    assert client.delete(f"/files/{held['file_id']}").status_code == 204
    assert client.delete(f"/files/{twin['file_id']}").status_code == 204
    assert client.get(f"/files/{held['file_id']}").status_code == 404
    assert client.get(f"/jobs/{job['job_id']}").json()["status"] in ("queued", "running")
    assert held["sha256"] in blobs(server.data_dir), "the running job keeps the blob of the file it took"
    release.touch()
    assert wait_final(client, job["job_id"])["status"] == "succeeded"
    assert held["sha256"] not in blobs(server.data_dir), "and it goes when the job ends"


def test_list_files_newest_first_in_pages(client: httpx.Client) -> None:
    mine = [upload(client, IMAGES / "T.png", name=f"t{i}.png")["file_id"] for i in range(5)]
    seen: list[dict] = []
    cursor = None
    while True:
        page = client.get("/files", params={"limit": 2, **({"cursor": cursor} if cursor else {})}).json()
        assert len(page["files"]) <= 2
        seen += page["files"]
        cursor = page["next_cursor"]
        if cursor is None or mine[0] in [f["file_id"] for f in seen]:
            break
    ids = [f["file_id"] for f in seen]
    assert ids[:5] == mine[::-1], "newest first, pages joined without gaps or repeats"
    assert [f["filename"] for f in seen[:5]] == [f"t{i}.png" for i in range(4, -1, -1)]
    r = client.get("/files", params={"limit": 0})
    assert r.status_code == 422
