"""A job from HTTP to a downloaded mesh, on a real server on loopback."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import threading
import time
import zipfile

import httpx
import pytest
import trimesh
from client_helpers import (
    IMAGES,
    MESHES,
    assert_valid_gltf,
    finish,
    follow_events,
    read_fbx,
    submit,
    upload,
    wait_final,
)
from PIL import Image


def test_upload_submit_follow_download(client: httpx.Client, tmp_path) -> None:
    info = upload(client, IMAGES / "typical_misc_crate.png")
    assert info["media_type"] == "image/png" and info["kind"] == "image"
    assert info["sha256"] == hashlib.sha256((IMAGES / "typical_misc_crate.png").read_bytes()).hexdigest()

    accepted = submit(client, "/mesh/generate", {"images": [info["file_id"]], "parameters": {"delay": 0.5}})
    assert accepted["status"] == "queued"
    assert accepted["links"]["events"].endswith(f"/jobs/{accepted['job_id']}/events")

    events = follow_events(client, accepted["job_id"])
    final = events[-1][1]
    assert final["status"] == "succeeded", final
    progresses = [data["progress"] for _, data in events]
    assert progresses == sorted(progresses) and 0 < progresses[-1] == 100.0
    assert any(0 < p < 100 for p in progresses), "the slow model's progress reports reach the client"
    assert [e for e, _ in events][0] == "status" and [e for e, _ in events][-1] == "status"

    output, preview = final["outputs"]
    assert output["name"] == "model.glb" and output["format"] == "glb"
    assert preview["name"] == "preview.png" and preview["media_type"] == "image/png"
    thumb = Image.open(io.BytesIO(client.get(preview["url"].removeprefix("/api/v1")).content))
    assert thumb.size == (256, 256) and thumb.getextrema()[3][1] == 255, "the preview shows the mesh"
    r = client.get(output["url"].removeprefix("/api/v1"))
    assert r.status_code == 200
    assert hashlib.sha256(r.content).hexdigest() == output["sha256"] and len(r.content) == output["size"]
    mesh = trimesh.load(io.BytesIO(r.content), file_type="glb", force="mesh")
    assert len(mesh.faces) == 2 * 15 * 15
    assert_valid_gltf(r.content, tmp_path)


def test_download_supports_etag_and_range(client: httpx.Client) -> None:
    file_id = upload(client, IMAGES / "T.png")["file_id"]
    job = finish(client, "/mesh/generate?wait=20", {"images": [file_id]})
    url = job["outputs"][0]["url"].removeprefix("/api/v1")
    full = client.get(url)
    etag = full.headers["etag"]
    assert etag == f'"{job["outputs"][0]["sha256"]}"'
    assert client.get(url, headers={"If-None-Match": etag}).status_code == 304
    part = client.get(url, headers={"Range": "bytes=4-11"})
    assert part.status_code == 206 and part.content == full.content[4:12]
    assert part.headers["content-range"] == f"bytes 4-11/{len(full.content)}"


@pytest.mark.parametrize("fmt", ["obj", "ply", "stl", "json"])
def test_output_formats(client: httpx.Client, fmt: str) -> None:
    file_id = upload(client, IMAGES / "typical_creature_elephant.png")["file_id"]
    job = finish(client, "/mesh/generate?wait=20", {"images": [file_id], "output_format": fmt})
    assert job["status"] == "succeeded", job
    output = job["outputs"][0]
    assert output["format"] == fmt
    data = client.get(output["url"].removeprefix("/api/v1")).content
    if fmt == "obj":  # a zip; this mesh has vertex colours, which OBJ keeps on its v lines
        assert output["name"] == "model.obj.zip"
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            text = z.read("model.obj").decode()
        assert len(next(ln for ln in text.splitlines() if ln.startswith("v ")).split()) == 7
        mesh = trimesh.load(io.BytesIO(text.encode()), file_type="obj", force="mesh")
    elif fmt == "json":
        body = json.loads(data)
        mesh = trimesh.Trimesh(body["vertices"], body["faces"], process=False)
        assert len(body["vertex_colors"]) == len(body["vertices"]) == len(body["normals"])
    else:
        mesh = trimesh.load(io.BytesIO(data), file_type=fmt, force="mesh")
    assert len(mesh.faces) == 2 * 15 * 15


def test_obj_output_of_a_textured_mesh_carries_its_material_and_texture(client: httpx.Client) -> None:
    mesh_id = upload(client, MESHES / "typical_humanoid_goblin.obj")["file_id"]
    job = finish(client, "/texture/generate?wait=30", {"mesh": mesh_id, "text_prompt": "moss",
                                                       "output_format": "obj"})
    data = client.get(job["outputs"][0]["url"].removeprefix("/api/v1")).content
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        names = set(z.namelist())
        assert {"model.obj", "model.mtl"} <= names and any(n.endswith(".png") for n in names)
        assert "mtllib model.mtl" in z.read("model.obj").decode()
        assert "map_Kd" in z.read("model.mtl").decode()


def test_one_job_writes_several_formats_from_one_model_run(client: httpx.Client, tmp_path) -> None:
    from pxr import Usd, UsdGeom
    from test_geometry import usd_faces_and_errors

    file_id = upload(client, IMAGES / "typical_creature_elephant.png")["file_id"]
    job = finish(client, "/mesh/generate?wait=60", {"images": [file_id], "output_formats": ["glb", "obj", "fbx",
                                                                                           "usdz"]})
    assert job["status"] == "succeeded", job
    assert [(s["name"], s["attempts"]) for s in job["stages"]] == [("generate_mesh", 1), ("export", 1)], \
        "the model ran once"
    outputs = {o["name"]: o for o in job["outputs"]}
    assert {name: o["format"] for name, o in outputs.items()} == {
        "model.glb": "glb", "model.obj.zip": "obj", "model.fbx": "fbx", "model.usdz": "usdz", "preview.png": "png"}
    faces = 2 * 15 * 15
    saved = {}
    for name, output in outputs.items():
        r = client.get(output["url"].removeprefix("/api/v1"))
        assert r.status_code == 200 and len(r.content) == output["size"]
        saved[name] = tmp_path / name
        saved[name].write_bytes(r.content)
    assert len(trimesh.load(saved["model.glb"], force="mesh").faces) == faces
    with zipfile.ZipFile(saved["model.obj.zip"]) as z:
        z.extractall(tmp_path / "obj")
    assert len(trimesh.load(tmp_path / "obj" / "model.obj", force="mesh").faces) == faces
    (mesh,) = read_fbx(saved["model.fbx"])["meshes"]
    assert mesh["polygons"] == faces
    assert usd_faces_and_errors(saved["model.usdz"]) == (faces, [])
    assert UsdGeom.GetStageUpAxis(Usd.Stage.Open(str(saved["model.usdz"]))) == UsdGeom.Tokens.y


def test_each_feature_takes_the_formats_that_keep_its_result(client: httpx.Client, server) -> None:
    spec = httpx.get(f"{server.url}/openapi.json").json()["components"]["schemas"]
    assert spec["RiggingRequest"]["properties"]["output_format"]["enum"] == ["glb", "fbx"]
    assert spec["SegmentationRequest"]["properties"]["output_format"]["enum"] == ["glb", "obj", "fbx", "usdz"]
    assert len(spec["MeshGenerationRequest"]["properties"]["output_format"]["enum"]) == 7
    mesh = "data:model/obj;base64," + base64.b64encode(b"v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n").decode()
    r = client.post("/rig", json={"mesh": mesh, "output_formats": ["glb", "obj"]})
    assert r.status_code == 422 and r.json()["error_code"] == "UNSUPPORTED_OUTPUT_FORMAT", r.text
    assert r.json()["details"]["supported_outputs"] == ["glb", "fbx"] and "skeleton" in r.json()["message"]
    r = client.post("/segment", json={"mesh": mesh, "output_format": "stl"})
    assert r.status_code == 422 and r.json()["hint"] == "ask for one of glb, obj, fbx, usdz", r.text
    r = client.post("/rig", json={"mesh": mesh, "output_format": "glb", "output_formats": ["fbx"]})
    assert r.status_code == 422 and "not both" in r.json()["message"], r.text


def test_downloads_are_named_after_the_upload_or_the_job(client: httpx.Client) -> None:
    file_id = upload(client, IMAGES / "typical_misc_crate.png")["file_id"]
    job = finish(client, "/mesh/generate?wait=20", {"images": [file_id], "output_formats": ["glb", "obj"]})
    names = {}
    for output in job["outputs"]:
        r = client.get(output["url"].removeprefix("/api/v1"))
        names[output["name"]] = r.headers["content-disposition"]
    assert names == {"model.glb": 'attachment; filename="typical_misc_crate.glb"',
                     "model.obj.zip": 'attachment; filename="typical_misc_crate.obj.zip"',
                     "preview.png": 'attachment; filename="typical_misc_crate-preview.png"'}
    image = "data:image/png;base64," + base64.b64encode((IMAGES / "T.png").read_bytes()).decode()
    inline = finish(client, "/mesh/generate?wait=20", {"images": [image]})
    r = client.get(inline["outputs"][0]["url"].removeprefix("/api/v1"))
    assert r.headers["content-disposition"] == f'attachment; filename="{inline["job_id"]}.glb"'


def test_fbx_is_refused_up_front_without_the_bpy_environment(make_server) -> None:
    srv = make_server(env={"POCKET3D_BPY_PYTHON": "/nonexistent/python"})
    with srv.client() as c:
        reason = c.get("/system/models").json()["unavailable_formats"]["fbx"]
        assert "bpy" in reason
        file_id = upload(c, IMAGES / "T.png")["file_id"]
        r = c.post("/mesh/generate", json={"images": [file_id], "output_format": "fbx"})
        assert r.status_code == 422 and r.json()["error_code"] == "FORMAT_UNAVAILABLE"
        assert c.get("/jobs").json()["jobs"] == []


def test_target_faces_decimates_and_keeps_the_uvs(client: httpx.Client, tmp_path) -> None:
    mesh_id = upload(client, MESHES / "typical_humanoid_goblin.obj")["file_id"]
    job = finish(client, "/texture/generate?wait=30", {"mesh": mesh_id, "text_prompt": "red", "target_faces": 5000,
                                                       "model_preference": "test_subdivide_texture"})
    assert job["status"] == "succeeded", job
    data = client.get(job["outputs"][0]["url"].removeprefix("/api/v1")).content
    out = trimesh.load(io.BytesIO(data), file_type="glb", force="mesh")
    assert 4500 <= len(out.faces) <= 5000, len(out.faces)
    assert_valid_gltf(data, tmp_path)  # the subdivided goblin had 4 x 16358 faces
    assert out.visual.kind == "texture" and len(out.visual.uv) == len(out.vertices)


def test_data_uri_input_and_mesh_features(client: httpx.Client, tmp_path) -> None:
    png = (IMAGES / "typical_building_mushroom.png").read_bytes()
    job = finish(client, "/mesh/generate?wait=20",
                 {"images": ["data:image/png;base64," + base64.b64encode(png).decode()]})
    assert job["status"] == "succeeded"

    source = trimesh.load(MESHES / "typical_creature_robot_dinosour.obj", force="mesh")
    for route, extra in (("/segment", {}), ("/rig", {}), ("/texture/generate", {"text_prompt": "rusty metal"})):
        mesh_id = upload(client, MESHES / "typical_creature_robot_dinosour.obj")["file_id"]
        job = finish(client, f"{route}?wait=30", {"mesh": mesh_id, **extra})
        assert job["status"] == "succeeded", job
        data = client.get(job["outputs"][0]["url"].removeprefix("/api/v1")).content
        out = trimesh.load(io.BytesIO(data), file_type="glb", force="mesh")
        assert len(out.faces) == 4 * len(source.faces)  # the test model subdivides once
        assert_valid_gltf(data, tmp_path)


def test_status_alias_list_filters_and_pagination(client: httpx.Client) -> None:
    ids = []
    for _ in range(3):
        file_id = upload(client, IMAGES / "T.png")["file_id"]
        ids.append(finish(client, "/mesh/generate?wait=20", {"images": [file_id]})["job_id"])
    assert client.get(f"/mesh/status/{ids[0]}").json()["job_id"] == ids[0]

    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": 2, "status": "succeeded", "feature": "mesh_generation"}
        if cursor:
            params["cursor"] = cursor
        page = client.get("/jobs", params=params).json()
        assert len(page["jobs"]) <= 2
        seen += [j["job_id"] for j in page["jobs"]]
        assert all(j["status"] == "succeeded" for j in page["jobs"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert set(ids) <= set(seen) and len(seen) == len(set(seen))
    assert seen == sorted(seen, reverse=True), "newest first"
    assert client.get("/jobs", params={"feature": "auto_rigging", "status": "queued"}).json()["jobs"] == []
    assert client.get("/jobs", params={"status": "bogus"}).status_code == 422


def test_model_failure_is_a_failed_job_with_a_code(client: httpx.Client, server) -> None:
    job = finish(client, "/mesh/generate?wait=20", {"text_prompt": "a chair"})
    assert job["status"] == "failed"
    assert job["error"]["code"] == "MODEL_ERROR"
    assert "failed on purpose" in job["error"]["message"]
    assert job["outputs"] == []
    assert not list((server.data_dir / "tmp").iterdir())


def test_cancel_queued_and_running_jobs(client: httpx.Client, server) -> None:
    slow = {"parameters": {"delay": 20, "steps": 100}}
    # test_heightfield runs 4 at once: the first 4 jobs run, the 5th waits in the queue.
    jobs = [submit(client, "/mesh/generate", {"images": [upload(client, IMAGES / "T.png")["file_id"]], **slow})["job_id"]
            for _ in range(5)]
    deadline = time.monotonic() + 10
    while sum(client.get(f"/jobs/{j}").json()["status"] == "running" for j in jobs[:4]) < 4:
        assert time.monotonic() < deadline, "the first four jobs did not start"
        time.sleep(0.05)
    waiting = client.get(f"/jobs/{jobs[4]}").json()
    assert waiting["status"] == "queued" and waiting["queue_position"] == 1

    r = client.post(f"/jobs/{jobs[4]}/cancel")
    assert r.status_code == 200 and r.json()["status"] == "cancelled", "a queued job is cancelled at once"

    r = client.post(f"/jobs/{jobs[0]}/cancel")
    assert r.status_code == 200 and r.json()["cancel_requested"] is True
    for j in jobs[1:4]:
        client.post(f"/jobs/{j}/cancel")
    for j in jobs[:4]:
        final = wait_final(client, j, timeout=10)
        assert final["status"] == "cancelled" and final["outputs"] == []
    assert client.post(f"/jobs/{jobs[0]}/cancel").json()["status"] == "cancelled", "cancel is idempotent"
    assert not list((server.data_dir / "tmp").iterdir()), "a cancelled stage leaves no temp files"

    done_id = upload(client, IMAGES / "T.png")["file_id"]
    done = finish(client, "/mesh/generate?wait=20", {"images": [done_id]})["job_id"]
    r = client.post(f"/jobs/{done}/cancel")
    assert r.status_code == 409 and r.json()["error_code"] == "JOB_NOT_CANCELLABLE"


def test_wait_answers_with_the_job_once_it_has_finished(client: httpx.Client, tmp_path) -> None:
    file_id = upload(client, IMAGES / "T.png")["file_id"]
    release = tmp_path / "release"
    threading.Timer(1.0, release.touch).start()  # the job ends a second into the wait, however fast the machine
    r = client.post("/mesh/generate?wait=60", json={"images": [file_id], "parameters": {"hold_until": str(release)}},
                    timeout=90)
    assert r.status_code == 200, r.text
    job = r.json()
    assert job["status"] == "succeeded" and job["outputs"], "the finished job itself, as GET /jobs/{id} shows it"
    assert job == client.get(f"/jobs/{job['job_id']}").json()


def test_wait_returns_202_when_the_job_is_slower(client: httpx.Client, tmp_path) -> None:
    file_id = upload(client, IMAGES / "T.png")["file_id"]
    release = tmp_path / "release"  # the job runs until the test releases it, however fast the machine
    try:
        r = client.post("/mesh/generate?wait=5", json={"images": [file_id],
                                                       "parameters": {"hold_until": str(release)}})
        assert r.status_code == 202 and r.headers["location"].endswith(r.json()["job_id"])
        assert r.json()["status"] == "running", "the answer after waiting tells the state the job is in now"
    finally:
        release.touch()
    assert wait_final(client, r.json()["job_id"])["status"] == "succeeded"


def test_system_endpoints_and_request_ids(client: httpx.Client, server) -> None:
    assert client.get("/system/health").json()["status"] == "ok"
    ready = client.get("/system/ready")
    assert ready.status_code == 200 and ready.json()["ready"] is True
    models = {m["id"]: m for m in client.get("/system/models").json()["models"]}
    assert models["test_heightfield"]["available"] is True
    assert models["test_heightfield"]["parameters_schema"]["properties"]["grid"]["maximum"] == 128
    assert not models["test_needs_gpu"]["available"]
    assert any("cuda" in r for r in models["test_needs_gpu"]["unavailable_reasons"])
    assert any("NoSuchAdapter" in r for r in models["test_not_installed"]["unavailable_reasons"])
    (cpu,) = client.get("/system/devices").json()
    assert cpu["kind"] == "cpu" and cpu["memory_total_mb"] > 0

    r = client.get("/jobs/job_nope", headers={"X-Request-ID": "trace-123"})
    assert r.status_code == 404 and r.headers["x-request-id"] == "trace-123"
    assert r.json()["request_id"] == "trace-123" and r.json()["error_code"] == "JOB_NOT_FOUND"
    generated = client.get("/system/health").headers["x-request-id"]
    assert len(generated) == 32

    docs = httpx.get(server.url + "/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
    spec = httpx.get(server.url + "/openapi.json").json()
    assert "/api/v1/mesh/generate" in spec["paths"] and "/api/v1/jobs/{job_id}/events" in spec["paths"]


def test_ready_is_503_with_reasons_when_a_feature_has_no_model(make_server, tmp_path) -> None:
    only_mesh = tmp_path / "models.yaml"
    only_mesh.write_text("""
entry_points: false  # only the models listed here, not the installed built-ins
models:
  mesh_generation:
    test_heightfield:
      class: "p3d_testmodels:HeightfieldTestModel"
      supported_inputs: ["image"]
      supported_outputs: ["glb"]
""")
    gpu_only = tmp_path / "gpu-only.yaml"
    gpu_only.write_text(only_mesh.read_text().replace("test_heightfield:", "big:").replace(
        'supported_outputs: ["glb"]', 'supported_outputs: ["glb"]\n      devices: ["cuda"]'))
    srv = make_server(models=only_mesh)
    with srv.client() as c:
        r = c.get("/system/ready")
        assert r.status_code == 503 and r.json()["error_code"] == "NOT_READY"
        reasons = r.json()["details"]["reasons"]
        assert "no available model for segmentation (none registered)" in reasons
        assert not any("mesh_generation" in x for x in reasons)
    with make_server(tmp_path / "gpu-only" / "data", models=gpu_only).client() as c:
        (reason,) = c.get("/system/ready").json()["details"]["reasons"][:1]
        assert reason == "no available model for mesh_generation: big: no cuda device on this node"


def test_an_adapter_returning_its_input_does_not_damage_the_stored_input(make_server) -> None:
    srv = make_server(env={"POCKET3D_STORAGE__KEEP_INPUTS": "true"})
    with srv.client() as c:
        info = upload(c, IMAGES / "T.png")
        for _ in range(2):  # the second job proves the first left the stored input in place
            job = finish(c, "/mesh/generate?wait=20", {"images": [info["file_id"]],
                                                       "model_preference": "test_passthrough"})
            assert job["status"] == "succeeded", job
        blob = srv.data_dir / "artifacts" / info["sha256"][:2] / info["sha256"][2:4] / info["sha256"]
        assert blob.is_file() and hashlib.sha256(blob.read_bytes()).hexdigest() == info["sha256"]
