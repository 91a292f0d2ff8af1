"""Artifacts: inputs go when their job ends (unless configured to stay), outputs when they expire."""

from __future__ import annotations

import time

from client_helpers import IMAGES, submit, upload
from server import SUPPORT

from pocket3d.config import load_settings
from pocket3d.node import Node


def blobs(data_dir) -> set[str]:
    return {p.name for p in (data_dir / "artifacts").rglob("*") if p.is_file()}


def test_uploaded_inputs_are_deleted_when_their_job_ends(make_server, tmp_path) -> None:
    srv = make_server()
    with srv.client() as c:
        info = upload(c, IMAGES / "typical_humanoid_block_robot.png")
        assert info["sha256"] in blobs(srv.data_dir)
        job = submit(c, "/mesh/generate?wait=20", {"images": [info["file_id"]]}, expect=200)
        assert info["sha256"] not in blobs(srv.data_dir)
        assert job["outputs"][0]["sha256"] in blobs(srv.data_dir)
        r = c.get(f"/files/{info['file_id']}")
        assert r.status_code == 404
        r = c.post("/mesh/generate", json={"images": [info["file_id"]]})
        assert r.status_code == 404 and r.json()["error_code"] == "FILE_NOT_FOUND"


def test_keep_inputs_lets_one_upload_serve_many_jobs(make_server) -> None:
    srv = make_server(env={"POCKET3D_STORAGE__KEEP_INPUTS": "true"})
    with srv.client() as c:
        info = upload(c, IMAGES / "T.png")
        for _ in range(2):
            assert submit(c, "/mesh/generate?wait=20", {"images": [info["file_id"]]}, expect=200)["status"] == \
                "succeeded"
        assert info["sha256"] in blobs(srv.data_dir)


def test_expired_outputs_answer_410_and_are_deleted(make_server, tmp_path) -> None:
    data_dir = tmp_path / "data"
    srv = make_server(data_dir)
    with srv.client() as c:
        job = submit(c, "/mesh/generate?wait=20", {"images": [upload(c, IMAGES / "T.png")["file_id"]]}, expect=200)
    srv.stop()
    sha = job["outputs"][0]["sha256"]
    assert sha in blobs(data_dir)

    settings = load_settings(SUPPORT / "system.yaml", data_dir=data_dir, models_file=SUPPORT / "models.yaml")
    node = Node(settings)
    try:
        later = time.time() + settings.storage.cleanup_after + 1
        assert node.retention.sweep(later) >= 1
    finally:
        node.store.dispose()
        node.lock.release()
    assert blobs(data_dir) == set(), "the output and the stage's intermediate mesh are gone"

    srv2 = make_server(data_dir)
    with srv2.client() as c:
        r = c.get(job["outputs"][0]["url"].removeprefix("/api/v1"))
        assert r.status_code == 410 and r.json()["error_code"] == "OUTPUT_EXPIRED"
        assert c.get(f"/jobs/{job['job_id']}").json()["status"] == "succeeded", "the record stays"


def test_a_second_server_on_the_same_data_dir_is_refused(make_server, tmp_path) -> None:
    srv = make_server()
    from server import ServerProcess

    second = ServerProcess(srv.data_dir)
    try:
        second.start(timeout=15)
        raise AssertionError("the second server started")
    except RuntimeError as e:
        assert "in use by another pocket3d process" in str(e)
