"""The UniRig adapter (pocket3d.models.adapters.unirig) through a real server, on the test stand-in of UniRig's code
(tests/support/standins/src: TEST STAND-IN, it computes nothing real) and a stand-in checkout of UniRig's configs
written here (the task, transform, tokenizer, model and system files the adapter reads, shaped as upstream's, with
fewer sampled points).

What is proven is the adapter's wiring: it builds both tasks once and keeps them loaded across jobs, hands the
stand-in the mesh in Blender's frame and the preset's knobs, maps the predicted joints back onto the input's own
vertices, writes one skin whose weights sum to 1 (and an FBX through the export stage), reports UniRig's failure,
and is listed unavailable without its weights. The stand-in's skeleton has its joints on mesh vertices, so a joint
that does not land on a vertex of the input means a frame was lost on the way.
"""

from __future__ import annotations

import gc
import io
import shutil
import sys
import weakref
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pygltflib
import pytest
import trimesh
import yaml
from adapter_harness import STANDINS, standin_env, write_models
from client_helpers import (
    MESHES,
    assert_valid_gltf,
    finish,
    joint_heads,
    read_fbx,
    stood_up,
    upload,
)
from server import SUPPORT, ServerProcess
from standin_calls import calls

from pocket3d.models.spec import Device, Feature, ModelSpec, RunInputs, StageCancelled

GOBLIN = MESHES / "typical_humanoid_goblin.obj"  # Z-up (a TRELLIS export), 16k faces
FAIL_SEED = 4040  # the stand-in's failing seed (tests/support/standins/src/model/parse.py)
SKELETON_CKPT = "skeleton/articulation-xl_quantization_256/model.ckpt"
SKIN_CKPT = "skin/articulation-xl/model.ckpt"
SKELETONS = {"skeleton_path": {"vroid": "./configs/skeleton/vroid.yaml", "mixamo": "./configs/skeleton/mixamo.yaml"}}

# Upstream's configs (VAST-AI-Research/UniRig configs/...), with 4096 sampled points instead of 65536/32768.
CONFIGS = {
    "task/quick_inference_skeleton_articulationxl_ar_256.yaml": {
        "mode": "predict", "experiment_name": "quick_inference_skeleton_articulationxl_ar_256",
        "resume_from_checkpoint": f"experiments/{SKELETON_CKPT}",
        "components": {"data": "quick_inference", "tokenizer": "tokenizer_parts_articulationxl_256",
                       "transform": "inference_ar_transform", "model": "unirig_ar_350m_1024_81920_float32",
                       "system": "ar_inference_articulationxl", "data_name": "raw_data.npz"},
        "trainer": {"precision": "bf16-mixed", "accelerator": "gpu", "devices": 1}},
    "task/quick_inference_unirig_skin.yaml": {
        "mode": "predict", "experiment_name": "quick_inference_skin",
        "resume_from_checkpoint": f"experiments/{SKIN_CKPT}",
        "components": {"data": "quick_inference", "transform": "inference_skin_transform", "model": "unirig_skin",
                       "system": "skin", "data_name": "predict_skeleton.npz"},
        "trainer": {"precision": "bf16-mixed", "accelerator": "gpu", "devices": 1, "inference_mode": True}},
    "transform/inference_ar_transform.yaml": {"predict_transform_config": {
        "augment_config": {"augment_affine_config": {"normalize_into": [-1.0, 1.0], "random_scale_p": 0.0,
                                                     "random_scale": [1.0, 1.0], "random_shift_p": 0.0,
                                                     "random_shift": [0.0, 0.0]}},
        "tail_config": {"copy_joint_to_tail": False, "connect_tail_to_unique_son": True},
        "order_config": SKELETONS, "vertex_group_config": None,
        "sampler_config": {"method": "mix", "num_samples": 4096, "vertex_samples": 1024}}},
    "transform/inference_skin_transform.yaml": {"predict_transform_config": {
        "augment_config": {"augment_affine_config": {"normalize_into": [-1.0, 1.0]}},
        "tail_config": {"copy_joint_to_tail": False, "connect_tail_to_unique_son": True},
        "order_config": SKELETONS,
        "vertex_group_config": {"names": ["voxel_skin"], "kwargs": {"voxel_skin": {
            "grid": 196, "alpha": 0.5, "link_dis": 0.00001, "grid_query": 7, "vertex_query": 1, "grid_weight": 3.0,
            "backend": "pyrender"}}},
        "sampler_config": {"method": "mix", "num_samples": 4096, "vertex_samples": 1024}}},
    "tokenizer/tokenizer_parts_articulationxl_256.yaml": {
        "method": "tokenizer_part", "num_discrete": 256, "continuous_range": [-1, 1],
        "cls_token_id": {"vroid": 0, "mixamo": 1, "articulationxl": 2}, "parts_token_id": {"body": 0, "hand": 1},
        "order_config": SKELETONS},
    "model/unirig_ar_350m_1024_81920_float32.yaml": {
        "__target__": "unirig_ar",
        "llm": {"pretrained_model_name_or_path": "facebook/opt-350m", "n_positions": 3076, "hidden_size": 1024},
        "mesh_encoder": {"__target__": "michelangelo_encoder", "pretrained_path": None, "num_latents": 512}},
    "model/unirig_skin.yaml": {
        "__target__": "unirig_skin", "num_train_vertex": 512, "num_heads": 16, "voxel_mask": 3.0,
        "mesh_encoder": {"__target__": "ptv3obj", "pretrained_path": None},
        "global_encoder": {"__target__": "michelangelo_encoder", "pretrained_path": None}},
    "system/ar_inference_articulationxl.yaml": {
        "__target__": "ar", "val_interval": 1,
        "generate_kwargs": {"max_new_tokens": 2048, "num_return_sequences": 1, "num_beams": 15, "do_sample": True,
                            "top_k": 5, "top_p": 0.95, "repetition_penalty": 3.0, "temperature": 1.5,
                            "no_cls": False, "assign_cls": "articulationxl", "use_dir_cls": False}},
    "system/skin.yaml": {"__target__": "skin", "val_interval": 1, "val_start_from": 1, "output_path": "tmp_skin",
                         "record_res": True},
    "skeleton/vroid.yaml": {"parts_order": ["body", "hand"], "parts": {"body": ["J_Bip_C_Hips"], "hand": []}},
    "skeleton/mixamo.yaml": {"parts_order": ["body", "hand"], "parts": {"body": ["mixamorig:Hips"], "hand": []}},
}


STANDIN_UNIRIG = SUPPORT / "standin_checkouts" / "UniRig"


def make_checkout(root: Path) -> Path:
    """A stand-in UniRig checkout: the stand-in code (tests/support/standin_checkouts/UniRig/src, kept off the
    shared PYTHONPATH: a top-level ``src`` would clash with other checkouts) and its configs."""
    shutil.copytree(STANDIN_UNIRIG / "src", root / "src", dirs_exist_ok=True)
    for name, content in CONFIGS.items():
        path = root / "configs" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(content, sort_keys=False))
    return root


def make_weights(root: Path) -> Path:
    """UniRig's two checkpoints as the hub lays them out, each a Lightning checkpoint whose ``state_dict`` fits
    the stand-in systems (one ``model.anchor``), with a value of its own to show it was loaded."""
    import torch

    for name, anchor in ((SKELETON_CKPT, [1.0, 2.0, 3.0]), (SKIN_CKPT, [4.0, 5.0, 6.0])):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        torch.save({"state_dict": {"model.anchor": torch.tensor(anchor)}, "epoch": 0}, root / name)
    return root


def registry(tmp: Path) -> Path:
    checkout, weights = make_checkout(tmp / "UniRig"), make_weights(tmp / "unirig-weights")
    entry = """
      class: "pocket3d.models.adapters.unirig:UniRigModel"
      vram_requirement: 0
      supported_inputs: ["mesh"]
      supported_outputs: ["glb", "fbx"]
      devices: ["cpu"]"""
    return write_models(tmp, f"""
entry_points: false  # only the models listed here, not the installed built-ins
models:
  auto_rigging:
    unirig:{entry}
      options: {{weights: "{weights}", source: "{checkout}"}}
    unirig-no-weights:{entry}
      options: {{weights: "{tmp / 'nowhere'}", source: "{checkout}"}}
""")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[httpx.Client, Path]]:
    tmp = tmp_path_factory.mktemp("unirig")
    record = tmp / "calls.jsonl"
    proc = ServerProcess(tmp / "data", models=registry(tmp),
                         env=standin_env(POCKET3D_STANDIN_CALLS=str(record))).start()
    with proc.client() as client:
        client.timeout = 120
        yield client, record
    proc.stop()


def _rig(client: httpx.Client, body: dict, mesh: Path = GOBLIN) -> dict:
    return finish(client, "/rig?wait=90", {"mesh": upload(client, mesh)["file_id"], **body})


def _download(client: httpx.Client, job: dict, name: str) -> bytes:
    output = next(o for o in job["outputs"] if o["name"] == name)
    r = client.get(output["url"].removeprefix("/api/v1"))
    assert r.status_code == 200
    return r.content


def _accessor(gltf: pygltflib.GLTF2, index: int) -> np.ndarray:
    acc = gltf.accessors[index]
    view = gltf.bufferViews[acc.bufferView]
    dtype = {5126: np.float32, 5123: np.uint16, 5125: np.uint32, 5121: np.uint8}[acc.componentType]
    width = {"SCALAR": 1, "VEC3": 3, "VEC4": 4, "MAT4": 16}[acc.type]
    blob = gltf.binary_blob()
    data = np.frombuffer(blob, dtype=dtype, count=acc.count * width, offset=view.byteOffset + (acc.byteOffset or 0))
    return data.reshape(acc.count, width)


def test_a_mesh_is_rigged_with_the_predicted_skeleton_on_its_own_vertices(served, tmp_path: Path) -> None:
    client, record = served
    job = _rig(client, {"quality": "low", "seed": 7})
    assert job["status"] == "succeeded", job
    assert job["model"] == "unirig"
    data = _download(client, job, "model.glb")
    assert assert_valid_gltf(data, tmp_path)["numErrors"] == 0
    gltf = pygltflib.GLTF2.load_from_bytes(data)
    (skin,) = gltf.skins
    generated = calls(record, "unirig.generate")[-1]
    assert len(skin.joints) == len(generated["joints"]) == 8, "one glTF joint per predicted joint"
    scene = trimesh.load(io.BytesIO(data), file_type="glb", force="scene")
    (rigged,) = scene.geometry.values()
    source = stood_up(trimesh.load(GOBLIN, force="mesh", process=False))  # the Z-up file, as pocket3d stood it up
    assert len(rigged.faces) == len(source.faces), "the input's own mesh, not the one the model saw"
    assert job["orientation"]["detected"] == "z" and job["orientation"]["applied_rotation"] is not None
    prim = gltf.meshes[gltf.nodes[0].mesh].primitives[0]
    weights = _accessor(gltf, prim.attributes.WEIGHTS_0)
    assert np.allclose(weights.sum(axis=1), 1.0, atol=1e-5), "every vertex's weights sum to 1"
    assert len(np.unique(_accessor(gltf, prim.attributes.JOINTS_0)[weights > 0])) >= 4, "the skin uses the bones"
    # The joints are where the stand-in put them, on vertices of the mesh it saw (turned Z-up for the model), so
    # after UniRig's normalisation and the turn are undone each lands on a vertex of the Y-up input.
    heads = joint_heads(gltf)
    distance = np.linalg.norm(source.vertices[None, :, :] - heads[:, None, :], axis=2).min(axis=1)
    assert distance.max() < 1e-4 * source.scale, distance
    # the knobs: the low preset, the seed, UniRig's generation settings kept, the checkpoints loaded
    assert generated["num_beams"] == 4 and generated["seed"] == 7 and generated["cls"] == "articulationxl"
    assert generated["stopping_criteria"] == "StoppingCriteriaList" and "max_new_tokens" in generated["kwargs"]
    assert generated["anchor"] == [1.0, 2.0, 3.0]
    skinned = calls(record, "unirig.skin")[-1]
    assert skinned["num_bones"] == [8] and skinned["anchor"] == [4.0, 5.0, 6.0]
    reskinned = calls(record, "unirig.reskin")[-1]
    assert reskinned["sample_method"] == "median" and reskinned["threshold"] == 0.03
    assert reskinned["vertices"] == len(source.vertices), "weights for every vertex of the input"
    grids = [c["voxel_skin_grid"] for c in calls(record, "unirig.TransformConfig.parse")]
    assert 128 in grids, "the low preset's voxel grid reached the skin transform"


def test_a_y_up_mesh_is_turned_for_the_model_and_back_and_client_parameters_win(served, tmp_path: Path) -> None:
    client, record = served
    upright = trimesh.load(GOBLIN, force="mesh", process=False)
    upright.apply_transform(trimesh.transformations.rotation_matrix(-np.pi / 2, [1, 0, 0]))  # Z-up -> Y-up
    glb = tmp_path / "goblin.glb"
    upright.export(glb)
    job = _rig(client, {"seed": 8, "parameters": {"num_beams": 3, "voxel_grid": 64}}, mesh=glb)
    assert job["status"] == "succeeded", job
    generated = calls(record, "unirig.generate")[-1]
    assert generated["num_beams"] == 3 and generated["seed"] == 8
    assert 64 in [c["voxel_skin_grid"] for c in calls(record, "unirig.TransformConfig.parse")]
    # UniRig saw it standing on Blender's Z axis (the stand-in's joints reach its extremes along every axis)
    extent = np.ptp(np.array(generated["joints"]), axis=0)
    assert extent[2] > 1.15 * extent[:2].max(), "tall along Z: it stands"
    # and the joints came back to the GLB's own Y-up frame, on its vertices
    heads = joint_heads(pygltflib.GLTF2.load_from_bytes(_download(client, job, "model.glb")))
    distance = np.linalg.norm(upright.vertices[None, :, :] - heads[:, None, :], axis=2).min(axis=1)
    assert distance.max() < 1e-4 * upright.scale, distance
    assert len(calls(record, "unirig.get_model")) == 2, "each task was built once, and kept for every job"


def test_a_simplified_view_and_an_fbx_with_the_armature(served, tmp_path: Path) -> None:
    client, record = served
    job = _rig(client, {"output_format": "fbx", "parameters": {"faces_target_count": 2000}})
    assert job["status"] == "succeeded", job
    assert calls(record, "unirig.dataset")[-1]["faces"] <= 2100, "the model saw the simplified mesh"
    source = trimesh.load(GOBLIN, force="mesh", process=False)
    assert calls(record, "unirig.reskin")[-1]["vertices"] == len(source.vertices), "the input's vertices are rigged"
    fbx = tmp_path / "rigged.fbx"
    fbx.write_bytes(_download(client, job, "model.fbx"))
    found = read_fbx(fbx)
    (armature,) = found["armatures"]
    assert len(armature["bones"]) == len(calls(record, "unirig.generate")[-1]["joints"])
    (mesh,) = found["meshes"]
    assert mesh["vertex_groups"] and set(mesh["vertex_groups"]) <= set(armature["bones"])


def test_a_failed_prediction_fails_the_job_with_the_reason(served) -> None:
    client, _ = served
    job = _rig(client, {"seed": FAIL_SEED})
    assert job["status"] == "failed"
    assert job["error"]["code"] == "MODEL_ERROR"
    assert "UniRig predicted no skeleton" in job["error"]["message"]


def test_bad_requests_are_refused_up_front(served) -> None:
    client, _ = served
    mesh = upload(client, GOBLIN)["file_id"]
    r = client.post("/rig", json={"mesh": mesh, "parameters": {"num_beams": 0}})
    assert r.status_code == 422 and r.json()["error_code"] == "INVALID_PARAMETERS"
    r = client.post("/rig", json={"mesh": mesh, "parameters": {"beams": 4}})
    assert r.status_code == 422 and r.json()["error_code"] == "INVALID_PARAMETERS"
    r = client.post("/rig", json={"mesh": mesh, "output_format": "usdz", "model_preference": "unirig"})
    assert r.status_code == 422 and r.json()["error_code"] == "UNSUPPORTED_OUTPUT_FORMAT"


def test_missing_weights_make_the_model_unavailable(served) -> None:
    client, _ = served
    models = {m["id"]: m for m in client.get("/system/models").json()["models"]}
    assert models["unirig"]["available"], models["unirig"]
    missing = models["unirig-no-weights"]
    assert not missing["available"]
    assert any("weights not found" in reason for reason in missing["unavailable_reasons"]), missing
    r = client.post("/rig", json={"mesh": upload(client, GOBLIN)["file_id"], "model_preference": "unirig-no-weights"})
    assert r.status_code == 503 and r.json()["error_code"] == "MODEL_UNAVAILABLE"
    assert "weights not found" in r.json()["message"]


def test_cancelling_during_generation_and_unload(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """In-process, on the stand-in: a job cancelled while the skeleton is generated stops as cancelled (not as a
    failed prediction: ARSystem.predict_step swallows the exception); one rig; after unload nothing keeps the
    loaded systems alive."""
    from pocket3d.models.adapters.unirig import UniRigModel, UniRigParams

    monkeypatch.syspath_prepend(str(STANDINS))
    monkeypatch.setenv("POCKET3D_STANDIN_CALLS", str(tmp_path / "calls.jsonl"))
    before = set(sys.modules)
    try:
        spec = ModelSpec("unirig", Feature.AUTO_RIGGING, frozenset({"mesh"}), ("glb", "fbx"),
                         options={"weights": str(make_weights(tmp_path / "w")),
                                  "source": str(make_checkout(tmp_path / "UniRig"))})
        assert UniRigModel.unavailable_reasons(spec) == []
        model = UniRigModel(spec)
        model.load(Device("cpu", "cpu", "cpu", 1024))
        work = tmp_path / "work"
        work.mkdir()

        def cancel_at_a_token(fraction: float, message: str | None) -> None:
            if "token" in (message or ""):
                raise StageCancelled()

        with pytest.raises(StageCancelled):
            model.run(RunInputs(work_dir=work, mesh=MESHES / "typical_creature_robot_dinosour.obj", quality="low"),
                      UniRigParams(), cancel_at_a_token)
        out = model.run(RunInputs(work_dir=work, mesh=MESHES / "typical_creature_robot_dinosour.obj",
                                  quality="low"), UniRigParams(), lambda fraction, message: None)
        assert pygltflib.GLTF2().load(str(out["mesh"])).skins
        systems = [weakref.ref(model.pipeline.skeleton.system), weakref.ref(model.pipeline.skin.system)]
        model.unload()
        gc.collect()
        assert model.pipeline is None and all(ref() is None for ref in systems)
    finally:
        for name in set(sys.modules) - before:
            if name.split(".")[0] in {"src", "box", "standin_calls"}:
                del sys.modules[name]

