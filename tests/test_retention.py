"""Artifacts: outputs go when they expire (uploads: test_files.py)."""

from __future__ import annotations

import time

from client_helpers import IMAGES, finish, upload
from server import SUPPORT

from pocket3d.config import load_settings
from pocket3d.node import Node


def blobs(data_dir) -> set[str]:
    return {p.name for p in (data_dir / "artifacts").rglob("*") if p.is_file()}


def test_expired_outputs_answer_410_and_are_deleted(make_server, tmp_path) -> None:
    data_dir = tmp_path / "data"
    srv = make_server(data_dir)
    with srv.client() as c:
        job = finish(c, "/mesh/generate?wait=20", {"images": [upload(c, IMAGES / "T.png")["file_id"]]})
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
        for r in (c.post("/rig", json={"mesh": f"{job['job_id']}/model.glb"}),
                  c.post(f"/jobs/{job['job_id']}/convert", json={"output_formats": ["obj"]})):
            assert r.status_code == 410 and r.json()["error_code"] == "OUTPUT_EXPIRED", r.text


def test_a_second_server_on_the_same_data_dir_is_refused(make_server, tmp_path) -> None:
    srv = make_server()
    from server import ServerProcess

    second = ServerProcess(srv.data_dir)
    try:
        second.start()  # it exits, refused; the timeout only bounds a hang
        raise AssertionError("the second server started")
    except RuntimeError as e:
        assert "in use by another pocket3d process" in str(e)
