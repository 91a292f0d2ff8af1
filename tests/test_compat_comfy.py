"""ComfyUI's Tripo node against /compat/comfy/ (its requests restated in tests/support/compat_clients.py): the
storage round trip, a failed task stopping the node at once, and the v2 error shape."""

from __future__ import annotations

import time

import httpx
import pytest
from PIL import Image

from client_helpers import IMAGES, assert_valid_gltf
from compat_clients import ClientFailed, ComfyTripoNode, glb_faces

IMAGE = IMAGES / "typical_humanoid_block_robot.png"


@pytest.fixture
def node(compat_server) -> ComfyTripoNode:
    return ComfyTripoNode(f"{compat_server.url}/compat/comfy/", poll_interval=0.5)


def test_image_to_model_through_the_storage(node, tmp_path):
    path = node.run(IMAGE, tmp_path)
    assert_valid_gltf(path.read_bytes(), tmp_path)
    task = node.polls[-1]["data"]
    assert task["type"] == "image_to_model" and task["progress"] == 100 and isinstance(task["create_time"], int)
    # the node's default face_limit -1 is "no limit": the model's whole mesh (the test model's 15 x 15 x 2
    # triangles), not one cut down to a few faces
    assert glb_faces(path.read_bytes()) == 450


def test_storage_links_do_one_thing_each(node):
    slot = node._call("POST", "customers/storage", json={"file_name": "robot.png"})
    assert httpx.put(slot["upload_url"], content=IMAGE.read_bytes()).status_code == 200
    assert httpx.get(slot["download_url"]).content == IMAGE.read_bytes()  # no key
    assert httpx.put(slot["upload_url"], content=b"again").status_code == 409
    assert httpx.get(slot["upload_url"]).status_code == 403
    assert httpx.put(slot["download_url"], content=b"x").status_code == 403


def test_a_failed_task_stops_the_node_at_once(node, tmp_path):
    blank = tmp_path / "blank.png"
    Image.new("RGB", (40, 40), (30, 160, 160)).save(blank)
    with pytest.raises(ClientFailed, match="Task failed: .*no object"):
        node.run(blank, tmp_path)
    assert node.polls[-1]["data"]["status"] == "failed"


def test_text_to_model_and_errors_in_the_v2_shape(node, tmp_path):
    created = node._call("POST", "proxy/tripo/v2/openapi/task", json={"type": "text_to_model",
                                                                     "prompt": "a green bottle"})
    task_id = created["data"]["task_id"]
    for _ in range(100):
        task = node._call("GET", f"proxy/tripo/v2/openapi/task/{task_id}")["data"]
        if task["status"] not in ("queued", "running"):
            break
        time.sleep(0.2)
    assert task["status"] == "success" and task["type"] == "text_to_model"
    with pytest.raises(ClientFailed, match="^400: task type 'stylize_model' is not served"):
        node._call("POST", "proxy/tripo/v2/openapi/task", json={"type": "stylize_model",
                                                                "original_model_task_id": task_id})
    with pytest.raises(ClientFailed, match="^404"):
        node._call("GET", "proxy/tripo/v2/openapi/task/job_000000000000000000000000000")
