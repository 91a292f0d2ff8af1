"""Every feature through the HTTP API of a real server with the shipped registry (config/models.yaml), on the
shared test data: on a machine without a GPU the built-in models are chosen and do the work.

Each output loads, is not empty, has a texture where the feature promises one, and GLBs pass the Khronos
glTF validator with 0 errors.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pygltflib
import pytest
import trimesh
from client_helpers import (
    IMAGES,
    MESHES,
    SHARED,
    assert_valid_gltf,
    finish,
    follow_events,
    is_closed,
    joint_heads,
    read_fbx,
    stood_up,
    submit,
    textured_goblin_zip,
    upload,
)
from PIL import Image
from server import ROOT, ServerProcess

from pocket3d.geometry.preview import PART_COLOURS

MULTIVIEW = SHARED / "multiview"


@pytest.fixture(scope="module")
def shipped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    proc = ServerProcess(tmp_path_factory.mktemp("shipped") / "data", models=ROOT / "config" / "models.yaml").start()
    with proc.client() as client:
        client.timeout = 120
        yield client
    proc.stop()


def _run(client: httpx.Client, route: str, body: dict) -> dict:
    job = finish(client, f"{route}?wait=60", body)
    assert job["status"] == "succeeded", job
    return job


def _download(client: httpx.Client, job: dict, name: str) -> bytes:
    output = next(o for o in job["outputs"] if o["name"] == name)
    r = client.get(output["url"].removeprefix("/api/v1"))
    assert r.status_code == 200
    return r.content


def _textured_glb(client: httpx.Client, job: dict, tmp_path: Path) -> tuple[bytes, pygltflib.GLTF2]:
    data = _download(client, job, "model.glb")
    report = assert_valid_gltf(data, tmp_path)
    assert report["numErrors"] == 0
    gltf = pygltflib.GLTF2.load_from_bytes(data)
    assert len(gltf.textures) > 0 and len(gltf.images) > 0, "a textured mesh"
    return data, gltf


def _mesh(data: bytes) -> trimesh.Trimesh:
    scene = trimesh.load(io.BytesIO(data), file_type="glb", force="scene")
    mesh = trimesh.util.concatenate(scene.dump())
    assert len(mesh.faces) > 0 and np.isfinite(mesh.vertices).all()
    return mesh


def test_the_builtin_models_are_the_default_without_a_gpu(shipped: httpx.Client) -> None:
    models = {m["id"]: m for m in shipped.get("/system/models").json()["models"]}
    for model_id in ("builtin_silhouette", "builtin_visual_hull", "builtin_procedural", "builtin_projection_paint",
                     "builtin_segmentation", "builtin_rigging"):
        assert models[model_id]["available"], models[model_id]
    assert not models["hunyuan3d-2"]["available"]
    assert any("no cuda device" in r for r in models["hunyuan3d-2"]["unavailable_reasons"])
    assert shipped.get("/system/ready").status_code == 200, "every feature has a model that can run"


def test_one_image_to_a_textured_mesh(shipped: httpx.Client, tmp_path: Path) -> None:
    image = upload(shipped, IMAGES / "typical_building_mushroom.png")["file_id"]
    job = _run(shipped, "/mesh/generate", {"images": [image]})
    assert job["model"] == "builtin_silhouette"
    data, _ = _textured_glb(shipped, job, tmp_path)
    assert is_closed(_mesh(data))


def test_named_views_to_a_textured_mesh(shipped: httpx.Client, tmp_path: Path) -> None:
    """The README's example: the character's face (character_2) on the front, its right side (character_1, a
    three-quarter view from its right) and its left (character_3, from its left and behind)."""
    views = {name: upload(shipped, MULTIVIEW / f"character_{i}.png")["file_id"]
             for name, i in (("front", 2), ("right", 1), ("left", 3))}
    # A single-image model is not handed three views to use one of them.
    r = shipped.post("/mesh/generate", json={"views": views, "model_preference": "builtin_silhouette"})
    assert r.status_code == 422 and r.json()["error_code"] == "MODEL_INPUT_MISMATCH"
    job = _run(shipped, "/mesh/generate", {"views": views})
    assert job["model"] == "builtin_visual_hull"
    assert job["input"]["views"] == views and job["input"]["images"] == []
    assert job["warnings"] == [], "every view fits the others at its named azimuth (front 0, left 90, right 270)"
    data, _ = _textured_glb(shipped, job, tmp_path)
    mesh = _mesh(data)
    assert is_closed(mesh)
    extent = mesh.bounds[1] - mesh.bounds[0]
    assert extent[1] > 2.5 * max(extent[0], extent[2]), "a standing figure: much taller than wide or deep"


def test_text_to_a_textured_mesh(shipped: httpx.Client, tmp_path: Path) -> None:
    job = _run(shipped, "/mesh/generate", {"text_prompt": "a red wooden chair", "output_format": "glb"})
    assert job["model"] == "builtin_procedural"
    data, gltf = _textured_glb(shipped, job, tmp_path)
    _mesh(data)
    assert {o["name"] for o in job["outputs"]} == {"model.glb", "preview.png"}
    # the preview shows the chair's own colour (its glTF lists its parts, but it is no segmentation)
    preview = np.asarray(Image.open(io.BytesIO(_download(shipped, job, "preview.png"))).convert("RGBA"))
    r, g, b = preview[preview[:, :, 3] > 0][:, :3].astype(float).mean(axis=0)
    assert r > 1.5 * max(g, b)


def test_texture_for_a_given_mesh_from_an_image_and_from_text(shipped: httpx.Client, tmp_path: Path) -> None:
    goblin = MESHES / "typical_humanoid_goblin.obj"
    source = trimesh.load(goblin, force="mesh")
    mesh_id = upload(shipped, goblin)["file_id"]
    for guide in ({"images": [upload(shipped, MULTIVIEW / "character_2.png")["file_id"]]},
                  {"text_prompt": "green stone"}):
        job = _run(shipped, "/texture/generate", {"mesh": mesh_id, **guide})
        assert job["model"] == "builtin_projection_paint"
        data, _ = _textured_glb(shipped, job, tmp_path)
        painted = _mesh(data)
        # the geometry is the one given, stood up (the file is Z-up): same place, same size
        assert np.allclose(painted.bounds, stood_up(source).bounds, atol=1e-3 * source.scale)


def test_part_segmentation(shipped: httpx.Client, tmp_path: Path) -> None:
    mesh_id = upload(shipped, MESHES / "typical_creature_elephant.obj")["file_id"]
    job = _run(shipped, "/segment", {"mesh": mesh_id})
    assert job["model"] == "builtin_segmentation"
    assert {o["name"] for o in job["outputs"]} >= {"model.glb", "labels.json", "preview.png"}
    data = _download(shipped, job, "model.glb")
    assert assert_valid_gltf(data, tmp_path)["numErrors"] == 0
    gltf = pygltflib.GLTF2.load_from_bytes(data)
    part_nodes = [n for n in gltf.nodes if n.extras and "part_id" in n.extras]
    assert len(part_nodes) >= 2, "an elephant has parts"
    labels = json.loads(_download(shipped, job, "labels.json"))
    source = trimesh.load(MESHES / "typical_creature_elephant.obj", force="mesh", process=False)
    assert len(labels["face_labels"]) == len(source.faces), "a label per face of the input, in its order"
    # each part node holds exactly the faces labelled with its part
    counts = np.bincount(labels["face_labels"])
    for node in part_nodes:
        (prim,) = gltf.meshes[node.mesh].primitives
        assert gltf.accessors[prim.indices].count // 3 == counts[node.extras["part_id"]]
    # the preview shows the parts in the part palette (shaded), not the texture's colours
    preview = np.asarray(Image.open(io.BytesIO(_download(shipped, job, "preview.png"))).convert("RGBA"))
    drawn = preview[preview[:, :, 3] > 0][:, :3].astype(float)
    direction = drawn / np.linalg.norm(drawn, axis=1, keepdims=True).clip(1e-6)
    palette = PART_COLOURS / np.linalg.norm(PART_COLOURS, axis=1, keepdims=True)
    assert ((direction @ palette.T).max(axis=1) > 0.995).mean() > 0.9
    # and the labels follow the surface: faces of one part sit together (a shuffled labelling would not)
    centres = source.triangles_center
    spread = np.mean([centres[np.array(labels["face_labels"]) == p].std(axis=0).mean() for p in range(len(counts))])
    assert spread < 0.7 * centres.std(axis=0).mean()


def test_auto_rigging_to_glb_and_fbx(shipped: httpx.Client, tmp_path: Path) -> None:
    mesh_id = upload(shipped, MESHES / "typical_humanoid_goblin.obj")["file_id"]
    job = _run(shipped, "/rig", {"mesh": mesh_id})
    assert job["model"] == "builtin_rigging"
    data = _download(shipped, job, "model.glb")
    assert assert_valid_gltf(data, tmp_path)["numErrors"] == 0
    gltf = pygltflib.GLTF2.load_from_bytes(data)
    (skin,) = gltf.skins
    assert len(skin.joints) >= 5
    job = _run(shipped, "/rig", {"mesh": mesh_id, "output_format": "fbx"})
    fbx = tmp_path / "rigged.fbx"
    fbx.write_bytes(_download(shipped, job, "model.fbx"))
    found = read_fbx(fbx)
    (armature,) = found["armatures"]
    assert len(armature["bones"]) == len(skin.joints)
    assert found["meshes"] and found["meshes"][0]["vertex_groups"], "the mesh is skinned to the bones"


def test_generate_then_rig_by_chaining_then_convert_to_fbx(shipped: httpx.Client, tmp_path: Path) -> None:
    """No download and re-upload between the jobs; the rig converted to FBX afterwards without rigging again."""
    image = upload(shipped, IMAGES / "typical_humanoid_block_robot.png")["file_id"]
    made = _run(shipped, "/mesh/generate", {"images": [image]})
    uploads = len(shipped.get("/files").json()["files"])
    rigged = _run(shipped, "/rig", {"mesh": f"{made['job_id']}/model.glb"})
    assert rigged["model"] == "builtin_rigging"
    assert len(shipped.get("/files").json()["files"]) == uploads
    data = _download(shipped, rigged, "model.glb")
    assert assert_valid_gltf(data, tmp_path)["numErrors"] == 0
    (skin,) = pygltflib.GLTF2.load_from_bytes(data).skins

    converted = finish(shipped, f"/jobs/{rigged['job_id']}/convert?wait=60", {"output_formats": ["fbx"]})
    assert converted["status"] == "succeeded" and [s["name"] for s in converted["stages"]] == ["export"]
    fbx = tmp_path / "rigged.fbx"
    r = shipped.get(converted["outputs"][0]["url"].removeprefix("/api/v1"))
    assert r.headers["content-disposition"] == 'attachment; filename="typical_humanoid_block_robot-rigged.fbx"'
    fbx.write_bytes(r.content)
    (armature,) = read_fbx(fbx)["armatures"]
    assert len(armature["bones"]) == len(skin.joints), "the same skeleton: the rig was converted, not redone"


def _texture_colours(data: bytes) -> set[tuple[int, int, int]]:
    """The colours that cover most of the base-colour texture(s) in a GLB."""
    scene = trimesh.load(io.BytesIO(data), file_type="glb", force="scene")
    found = set()
    for geometry in scene.geometry.values():
        image = getattr(geometry.visual.material, "baseColorTexture", None)
        assert image is not None, "the texture survived"
        counts = image.convert("RGB").getcolors(maxcolors=1 << 16) or []
        found |= {c for n, c in counts if n > 0.1 * image.width * image.height}
    return found


def test_a_textured_obj_zip_keeps_its_texture_through_the_builtin_models(shipped: httpx.Client,
                                                                          tmp_path: Path) -> None:
    """The goblin uploaded with its MTL and texture as one zip: segmented and rigged, the GLBs carry that
    texture; a job's OBJ output (a zip with its texture) feeds the next job the same way."""
    mesh_id = upload(shipped, textured_goblin_zip(tmp_path / "goblin.zip"))["file_id"]
    uploaded = {(200, 30, 30), (30, 30, 200)}
    segmented = _run(shipped, "/segment", {"mesh": mesh_id, "output_formats": ["glb", "obj"]})
    assert _texture_colours(_download(shipped, segmented, "model.glb")) == uploaded
    rigged = _run(shipped, "/rig", {"mesh": f"{segmented['job_id']}/model.obj.zip"})
    data = _download(shipped, rigged, "model.glb")
    assert assert_valid_gltf(data, tmp_path)["numErrors"] == 0
    assert _texture_colours(data) == uploaded
    assert len(pygltflib.GLTF2.load_from_bytes(data).skins) == 1


def _upright(data: bytes) -> trimesh.Trimesh:
    mesh = _mesh(data)
    assert int(np.argmax(np.ptp(mesh.vertices, axis=0))) == 1, f"the figure stands along Y: {mesh.extents}"
    return mesh


def test_a_z_up_mesh_comes_back_standing_from_every_feature(shipped: httpx.Client, tmp_path: Path) -> None:
    """The shared goblin is Z-up: segmented, textured and rigged, each GLB is Y-up (glTF's up) and valid, the job
    says what it found and did, and the preview stands too."""
    goblin = MESHES / "typical_humanoid_goblin.obj"
    for route, body in (("/segment", {}), ("/texture/generate", {"text_prompt": "green stone"}), ("/rig", {})):
        job = _run(shipped, route, {"mesh": upload(shipped, goblin)["file_id"], **body})
        assert job["orientation"]["detected"] == "z" and job["orientation"]["source"] == "shape", job["orientation"]
        assert job["orientation"]["applied_rotation"]["axis"] == "x", job["orientation"]
        assert job["orientation"]["applied_rotation"]["degrees"] == -90
        assert [w["code"] for w in job["warnings"]] == ["ROTATED_TO_Y_UP"], job["warnings"]
        assert job["warnings"][0]["stage"] == "orient" and job["stages"][0]["name"] == "orient"
        data = _download(shipped, job, "model.glb")
        assert assert_valid_gltf(data, tmp_path)["numErrors"] == 0
        _upright(data)
        preview = np.asarray(Image.open(io.BytesIO(_download(shipped, job, "preview.png"))))[:, :, 3] > 0
        ys, xs = np.nonzero(preview)
        assert np.ptp(ys) > 1.3 * np.ptp(xs), f"{route}: the preview stands"
        if route == "/rig":
            gltf = pygltflib.GLTF2.load_from_bytes(data)
            names = [gltf.nodes[j].name for j in gltf.skins[0].joints]
            heads = joint_heads(gltf)
            assert heads[names.index("Head"), 1] > heads[names.index("Hips"), 1] + 0.2, "the head above the hips"


def test_parameters_up_axis_overrides_what_the_shape_says(shipped: httpx.Client) -> None:
    goblin = MESHES / "typical_humanoid_goblin.obj"
    job = _run(shipped, "/segment", {"mesh": upload(shipped, goblin)["file_id"], "parameters": {"up_axis": "y"}})
    assert job["orientation"] == {"detected": "y", "source": "parameter", "applied_rotation": None, "scores": None}
    assert job["warnings"] == [] and job["input"]["parameters"] == {"up_axis": "y"}
    mesh = _mesh(_download(shipped, job, "model.glb"))
    assert int(np.argmax(mesh.extents)) == 2, "taken at its word: left lying along Z, as it came"
    r = shipped.post("/segment", json={"mesh": upload(shipped, goblin)["file_id"], "parameters": {"up_axis": "x"}})
    assert r.status_code == 422 and r.json()["error_code"] == "INVALID_PARAMETERS" and "up_axis" in r.text
    # an STL is written the way STL files stand: Z-up, as this one came in
    job = _run(shipped, "/texture/generate", {"mesh": upload(shipped, goblin)["file_id"], "text_prompt": "red",
                                              "output_format": "stl"})
    stl = trimesh.load(io.BytesIO(_download(shipped, job, "model.stl")), file_type="stl")
    source = trimesh.load(goblin, force="mesh")
    np.testing.assert_allclose(stl.bounds, source.bounds, atol=1e-4)


def test_the_job_says_what_was_asked_and_what_happened(shipped: httpx.Client) -> None:
    """An unknown text prompt: the built-in text model builds a generic shape and says so, in the job's view and in
    its event stream, beside the request as it was sent, the stages and the model's last message."""
    body = {"text_prompt": "a flurble on a zorp", "quality": "low", "seed": 3, "parameters": {"variation": 0.1}}
    job_id = submit(shipped, "/mesh/generate", body)["job_id"]
    events = follow_events(shipped, job_id)
    final = events[-1][1]
    job = shipped.get(f"/jobs/{job_id}").json()
    for view in (final, job):
        assert view["status"] == "succeeded"
        assert view["input"]["text_prompt"] == body["text_prompt"] and view["input"]["quality"] == "low"
        assert view["input"]["seed"] == 3 and view["input"]["parameters"] == {"variation": 0.1}
        assert view["input"]["output_formats"] == ["glb"] and view["input"]["model_preference"] is None
        assert [(s["name"], s["model"], s["status"]) for s in view["stages"]] == [
            ("generate_mesh", "builtin_procedural", "succeeded"), ("export", None, "succeeded")]
        model_stage = view["stages"][0]
        assert model_stage["device"] == "cpu" and model_stage["attempts"] == 1
        assert model_stage["started_at"] <= model_stage["finished_at"] and 0 <= model_stage["seconds"] < 60
        assert view["message"] == "writing the mesh", "the model's last progress message"
        (warning,) = view["warnings"]
        assert warning["code"] == "UNKNOWN_OBJECT" and warning["stage"] == "generate_mesh"
        assert "generic shape" in warning["message"] and "chair" in warning["message"]
    assert all({"input", "stages", "message", "warnings"} <= set(data) for _, data in events), "every event"


def test_requests_a_model_would_refuse_are_refused_at_once(shipped: httpx.Client) -> None:
    """422 at submission, not a job that fails later; and nothing queued."""
    views = [upload(shipped, MULTIVIEW / f"character_{i}.png")["file_id"] for i in (1, 2, 3)]
    mesh_id = upload(shipped, MESHES / "typical_creature_robot_dinosour.obj")["file_id"]
    before = len(shipped.get("/jobs").json()["jobs"])
    cases = [
        ("/mesh/generate", {"images": views + views[:2]}, "INVALID_REQUEST", "2 to 4 views"),
        ("/mesh/generate", {"images": views, "parameters": {"azimuths": [0, 90]}}, "INVALID_REQUEST", "one per image"),
        ("/texture/generate", {"mesh": mesh_id, "images": views + views[:2]}, "INVALID_REQUEST", "at most 4"),
        ("/texture/generate", {"mesh": mesh_id, "text_prompt": "red", "parameters": {"azimuths": [0]}},
         "INVALID_REQUEST", "one per image"),
        ("/mesh/generate", {"text_prompt": "   "}, "INVALID_REQUEST", "text_prompt or images"),
        # decimating a rig or a segmentation afterwards would drop the skin or the parts
        ("/rig", {"mesh": mesh_id, "target_faces": 3000}, "INVALID_REQUEST", "target_faces"),
        ("/segment", {"mesh": mesh_id, "target_faces": 3000}, "INVALID_REQUEST", "target_faces"),
        # an OBJ cannot hold a skeleton: not offered for rigging
        ("/rig", {"mesh": mesh_id, "output_format": "obj", "model_preference": "builtin_rigging"},
         "UNSUPPORTED_OUTPUT_FORMAT", "skeleton"),
    ]
    for route, body, code, words in cases:
        r = shipped.post(route, json=body)
        assert r.status_code == 422 and r.json()["error_code"] == code, (route, body, r.text)
        assert words in r.text, r.text
    assert len(shipped.get("/jobs").json()["jobs"]) == before
