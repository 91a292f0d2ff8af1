"""The Hunyuan3D-2/2.1 api_server contract at /compat/hunyuan, as its clients use it: Tencent's Blender add-on,
blender-mcp's LOCAL_API mode and SyncTwin's Omniverse extension (tests/support/compat_clients.py)."""

from __future__ import annotations

import base64
import io
import re

import httpx
import numpy as np
import pytest
import trimesh
from PIL import Image

from client_helpers import IMAGES, MESHES, assert_valid_gltf, follow_events
from compat_clients import BlenderMCP, ClientFailed, HunyuanBlender, SyncTwin, glb_faces

IMAGE = IMAGES / "typical_misc_crate.png"


@pytest.fixture
def api(compat_server) -> str:
    return f"{compat_server.url}/compat/hunyuan"


@pytest.fixture
def native(compat_server):
    with compat_server.client() as c:
        yield c


def uniform_png(tmp_path, colour=(40, 90, 200)):
    path = tmp_path / "blank.png"
    Image.new("RGB", (64, 64), colour).save(path)
    return path


def latest_job(native: httpx.Client) -> dict:
    return native.get("/jobs", params={"limit": 1}).json()["jobs"][0]


def knobs_of(native: httpx.Client, job: dict) -> dict:
    url = next(o["url"] for o in job["outputs"] if o["name"] == "params.json")
    return native.get(url.removeprefix("/api/v1")).json()


def colours(glb: bytes) -> np.ndarray | None:
    scene = trimesh.load(io.BytesIO(glb), file_type="glb", force="scene")
    mesh = next(iter(scene.geometry.values()))
    return np.asarray(mesh.visual.vertex_colors) if mesh.visual.kind == "vertex" else None


def test_blender_addon_image_text_and_texture(api, native, tmp_path):
    blender = HunyuanBlender(api)
    glb = blender.generate(image=IMAGE, texture=True)
    assert glb_faces(glb) > 0
    assert_valid_gltf(glb, tmp_path)
    job = latest_job(native)
    assert [s["name"] for s in job["stages"]] == ["generate_mesh", "paint_texture", "export"]
    # The add-on's knobs reached the model: 20 steps (not held to 2.1's 1-20 range), its guidance scale
    knobs = knobs_of(native, job)
    assert (knobs["steps"], knobs["guidance_scale"], knobs["octree_resolution"], knobs["seed"]) == (20, 5.5, 256, 1234)

    assert glb_faces(blender.generate(text="a red wooden chair")) > 0
    assert latest_job(native)["model"] == "builtin_procedural"

    # the texture case: the selected mesh goes along and comes back painted, its geometry kept
    cube = trimesh.creation.box().export(file_type="glb")
    painted = blender.generate(mesh=cube, image=IMAGE, texture=True)
    assert glb_faces(painted) == 12
    assert colours(painted) is not None
    assert latest_job(native)["feature"] == "texture_generation"


def test_texture_false_is_the_shape_only(api, native):
    """The original's default: texture false answers the untextured shape, and no paint stage runs."""
    shape = HunyuanBlender(api).generate(image=IMAGE)
    assert glb_faces(shape) > 0
    assert colours(shape) is None
    assert [s["name"] for s in latest_job(native)["stages"]] == ["generate_mesh", "export"]


def test_a_failed_job_shows_the_reason(api, tmp_path):
    with pytest.raises(ClientFailed, match=r"^Generation failed: .*no object in an image of one colour"):
        HunyuanBlender(api).generate(image=uniform_png(tmp_path))
    r = httpx.post(f"{api}/generate", json={"image": base64.b64encode(uniform_png(tmp_path).read_bytes()).decode()})
    assert r.status_code == 404
    assert set(r.json()) == {"text", "error_code"} and r.json()["error_code"] == 1


def test_bad_bodies_answer_in_the_original_shape(api):
    for body in ({}, {"text": "  "}, {"image": "not base64!"}, {"image": "aGVsbG8=", "type": "obj"}):
        r = httpx.post(f"{api}/generate", json=body)
        assert r.status_code == 404, (body, r.text)
        assert set(r.json()) == {"text", "error_code"}, r.text
    r = httpx.post(f"{api}/generate", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 404 and r.json()["error_code"] == 1


def test_blender_mcp_local_api(api, native, tmp_path):
    result = BlenderMCP(api).generate(tmp_path, image=IMAGE, text="a wooden crate")
    assert result["status"] == "DONE"
    assert glb_faces(open(result["path"], "rb").read()) > 0
    assert latest_job(native)["model"] == "compat_knobs"  # given both, the image decides, as in the original


def test_synctwin_health_async_generation_and_strict_polls(api, native):
    client = SyncTwin(api)
    health = client.health_check()
    assert health.status == "healthy" and re.fullmatch(r"[0-9a-f]{6}", health.worker_id)
    assert client.health_check().worker_id == health.worker_id  # stable per process

    # A data: prefix is taken off; unknown keys are ignored; every knob is clamped to the model's schema.
    image = "data:image/png;base64," + base64.b64encode(IMAGE.read_bytes()).decode()
    glb = client.generate_3d_model_async(IMAGE, image=image, num_inference_steps=500, face_count=50,
                                         sampler="euler")
    assert glb_faces(glb) > 0
    assert client.polls[-1]["status"] == "completed"
    for poll in client.polls:  # exactly the keys its dataclass has: an extra one would kill the task
        assert set(poll) in ({"status"}, {"status", "model_base64"}), poll
    knobs = knobs_of(native, latest_job(native))
    assert (knobs["steps"], knobs["max_faces"], knobs["num_chunks"]) == (100, 100, 8000)


def test_synctwin_failed_task(api, tmp_path):
    client = SyncTwin(api, poll_interval=0.5)
    with pytest.raises(ClientFailed, match=r"^Task failed: .*no object in an image of one colour"):
        client.generate_3d_model_async(uniform_png(tmp_path))
    assert set(client.polls[-1]) == {"status", "message"}


def test_unknown_uid_is_404(api):
    r = httpx.get(f"{api}/status/job_0000000000000000000000000000")
    assert r.status_code == 404 and set(r.json()) == {"detail"}


def test_compat_job_is_a_native_job_with_events(api, native):
    """A job a foreign client started is an ordinary job: listed natively and followed over SSE."""
    uid = httpx.post(f"{api}/send", json=SyncTwin.request(IMAGE)).json()["uid"]
    events = follow_events(native, uid)
    assert events[-1][1]["status"] == "succeeded"
    listed = next(j for j in native.get("/jobs", params={"limit": 20}).json()["jobs"] if j["job_id"] == uid)
    assert listed["feature"] == "mesh_generation"
    assert listed["input"]["seed"] == 1234 and listed["input"]["images"][0].startswith("data:")  # echoed


def test_meshes_from_a_file_path_stay_out(api):
    """A client that sends something else than base64 where the mesh goes gets a clear refusal."""
    body = {"mesh": str(MESHES / "typical_humanoid_goblin.obj"), "text": "green", "texture": True}
    r = httpx.post(f"{api}/generate", json=body)
    assert r.status_code == 404 and "base64" in r.json()["text"].lower()
