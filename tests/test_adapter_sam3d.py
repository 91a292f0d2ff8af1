"""The SAM 3D Objects adapter (pocket3d.models.adapters.sam3d) through a real server, on the test stand-in of the
library (tests/support/standins: ``inference`` for the checkout's notebook/inference.py and ``sam3d_objects``;
TEST STAND-IN, it computes nothing real).

The model is registered as in production, with ``cutout: true``, so each job first goes through the real rembg
adapter (on tests/support/tiny_rembg.py's tiny ONNX model), which passes an upload that already is a cut-out as it
is. What is proven is the adapter's wiring: the mask it hands the pipeline is the cut-out's alpha, the preset's and
the client's step counts reach the pipeline, the texture is baked at the request's resolution (texture baking on,
the thing ``Inference.__call__`` leaves off), the GLB is valid and textured, the splat is a download on request,
the model's failure fails the job with its message, and the model is unavailable without its weights.
"""

from __future__ import annotations

import gc
import sys
import weakref
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pygltflib
import pytest
import tiny_rembg
from adapter_harness import STANDINS, standin_env, write_models
from client_helpers import IMAGES, assert_valid_gltf, finish, upload
from PIL import Image
from server import ServerProcess
from standin_calls import calls

from pocket3d.models.spec import Device, Feature, InputRejected, ModelSpec, RunInputs

MUSHROOM = IMAGES / "typical_building_mushroom.png"  # an RGBA cut-out
FAIL_SEED = 4040  # the stand-in's failing seed (tests/support/standins/sam3d_objects/pipeline/...pointmap.py)


def make_weights(folder: Path) -> Path:
    """A checkpoints folder as the hub's ``checkpoints/`` holds it: here only its pipeline.yaml."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "pipeline.yaml").write_text("_target_: sam3d_objects.pipeline.inference_pipeline_pointmap."
                                          "InferencePipelinePointMap\ndevice: cuda\nss_inference_steps: 25\n")
    return folder


def registry(tmp: Path) -> Path:
    weights, u2net = make_weights(tmp / "sam3d-checkpoints"), tiny_rembg.build(tmp / "u2net")
    entry = """
      class: "pocket3d.models.adapters.sam3d:Sam3DObjectsModel"
      vram_requirement: 0
      supported_inputs: ["image"]
      supported_outputs: ["glb", "obj"]
      devices: ["cpu"]
      cutout: true"""
    return write_models(tmp, f"""
entry_points: false  # only the models listed here, not the installed built-ins
models:
  mesh_generation:
    sam3d-objects:{entry}
      options: {{weights: "{weights}"}}
    sam3d-objects-no-weights:{entry}
      options: {{weights: "{tmp / 'nowhere'}"}}
  background_removal:
    rembg:
      class: "pocket3d.models.adapters.rembg:RembgModel"
      supported_inputs: ["image"]
      supported_outputs: ["png"]
      devices: ["cpu"]
      options: {{weights: "{u2net}"}}
""")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[httpx.Client, Path]]:
    tmp = tmp_path_factory.mktemp("sam3d")
    record = tmp / "calls.jsonl"
    env = standin_env(POCKET3D_STANDIN_CALLS=str(record), MODEL_CHECKSUM_DISABLED="1")
    proc = ServerProcess(tmp / "data", models=registry(tmp), env=env).start()
    with proc.client() as client:
        client.timeout = 120
        yield client, record
    proc.stop()


def _generate(client: httpx.Client, body: dict, image: Path = MUSHROOM) -> dict:
    return finish(client, "/mesh/generate?wait=90", {"images": [upload(client, image)["file_id"]], **body})


def _download(client: httpx.Client, job: dict, name: str) -> bytes:
    output = next(o for o in job["outputs"] if o["name"] == name)
    r = client.get(output["url"].removeprefix("/api/v1"))
    assert r.status_code == 200
    return r.content


def test_a_cut_out_becomes_a_textured_mesh_with_texture_baking_on(served, tmp_path: Path) -> None:
    client, record = served
    job = _generate(client, {"quality": "high", "seed": 11, "texture_resolution": 256})
    assert job["status"] == "succeeded", job
    assert job["model"] == "sam3d-objects"
    data = _download(client, job, "model.glb")
    assert assert_valid_gltf(data, tmp_path)["numErrors"] == 0
    gltf = pygltflib.GLTF2.load_from_bytes(data)
    assert gltf.textures and gltf.images, "a textured mesh, not vertex colours"
    (material,) = gltf.materials
    assert material.pbrMetallicRoughness.metallicFactor == 0, "base colour only: not a metal"
    run = calls(record, "sam3d.pipeline.run")[-1]
    # the mask is the cut-out's alpha (at least half opaque), as 0/255, with the image's own RGB under it
    alpha = np.asarray(Image.open(MUSHROOM).convert("RGBA").getchannel("A"))
    assert run["mask_pixels"] == int((alpha >= 128).sum()) and run["alpha_values"] == [0, 255]
    assert run["image_shape"] == [*alpha.shape, 4]
    assert run["seed"] == 11
    assert run["stage1_inference_steps"] == 50 and run["stage2_inference_steps"] == 50, "the high preset"
    assert run["with_layout_postprocess"] is False
    pipelines_own, baked = calls(record, "sam3d.to_glb")[-2:]
    assert pipelines_own["with_texture_baking"] is False, "the pipeline's own GLB stays cheap"
    assert baked["with_texture_baking"] is True and baked["with_mesh_postprocess"] is True
    assert baked["use_vertex_color"] is False and baked["grad_enabled"] is True
    assert baked["texture_size"] == 256 and baked["simplify"] == 0.9
    assert baked["rendering_engine"] == "pytorch3d", "Inference's rendering engine, as the pipeline would use it"
    built = calls(record, "sam3d.Inference")[-1]
    assert built["config_file"].endswith("sam3d-checkpoints/pipeline.yaml") and built["compile"] is False
    assert "splat.ply" not in {o["name"] for o in job["outputs"]}


def test_client_parameters_win_and_the_splat_is_a_download(served) -> None:
    client, record = served
    job = _generate(client, {"seed": 12, "parameters": {"stage1_inference_steps": 3, "stage2_inference_steps": 4,
                                                        "simplify": 0.5, "gaussian_splat": True}})
    assert job["status"] == "succeeded", job
    run = calls(record, "sam3d.pipeline.run")[-1]
    assert (run["stage1_inference_steps"], run["stage2_inference_steps"]) == (3, 4)
    assert calls(record, "sam3d.to_glb")[-1]["simplify"] == 0.5
    splat = _download(client, job, "splat.ply")
    header = splat[:splat.index(b"end_header")].decode()
    assert header.startswith("ply\n") and "property float f_dc_0" in header and "element vertex " in header
    assert len(calls(record, "sam3d.Inference")) == 1, "the model stayed loaded between the jobs"


def test_a_failing_model_fails_the_job_with_its_message(served) -> None:
    client, _ = served
    job = _generate(client, {"seed": FAIL_SEED})
    assert job["status"] == "failed"
    assert job["error"]["code"] == "MODEL_ERROR"
    assert f"fails on seed {FAIL_SEED}" in job["error"]["message"]


def test_bad_requests_are_refused_up_front(served) -> None:
    client, _ = served
    image = upload(client, MUSHROOM)["file_id"]
    two = [image, upload(client, IMAGES / "typical_misc_crate.png")["file_id"]]
    r = client.post("/mesh/generate", json={"images": two, "model_preference": "sam3d-objects"})
    assert r.status_code == 422 and r.json()["error_code"] == "MODEL_INPUT_MISMATCH"
    r = client.post("/mesh/generate", json={"images": [image], "parameters": {"steps": 3}})
    assert r.status_code == 422 and r.json()["error_code"] == "INVALID_PARAMETERS"
    r = client.post("/mesh/generate", json={"images": [image], "parameters": {"simplify": 1.5}})
    assert r.status_code == 422 and r.json()["error_code"] == "INVALID_PARAMETERS"


def test_missing_weights_make_the_model_unavailable(served) -> None:
    client, _ = served
    models = {m["id"]: m for m in client.get("/system/models").json()["models"]}
    assert models["sam3d-objects"]["available"], models["sam3d-objects"]
    missing = models["sam3d-objects-no-weights"]
    assert not missing["available"]
    assert any("weights not found" in reason for reason in missing["unavailable_reasons"]), missing
    r = client.post("/mesh/generate", json={"images": [upload(client, MUSHROOM)["file_id"]],
                                            "model_preference": "sam3d-objects-no-weights"})
    assert r.status_code == 503 and r.json()["error_code"] == "MODEL_UNAVAILABLE"
    assert "weights not found" in r.json()["message"]


def test_an_image_without_a_cut_out_is_refused_and_unload_drops_the_pipeline(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """In-process, on the stand-in: an opaque image selects no object (INVALID_INPUT); after unload nothing keeps
    the loaded pipeline alive."""
    from pocket3d.models.adapters.sam3d import Sam3DObjectsModel, Sam3DObjectsParams

    monkeypatch.syspath_prepend(str(STANDINS))
    monkeypatch.setenv("POCKET3D_STANDIN_CALLS", str(tmp_path / "calls.jsonl"))
    for variable in ("CONDA_PREFIX", "CUDA_HOME", "LIDRA_SKIP_INIT"):  # the notebook module's, restored after
        monkeypatch.setenv(variable, "")
        monkeypatch.delenv(variable)
    before = set(sys.modules)
    try:
        spec = ModelSpec("sam3d-objects", Feature.MESH_GENERATION, frozenset({"image"}), ("glb",),
                         options={"weights": str(make_weights(tmp_path / "checkpoints"))})
        assert Sam3DObjectsModel.unavailable_reasons(spec) == []
        model = Sam3DObjectsModel(spec)
        model.load(Device("cpu", "cpu", "cpu", 1024))
        opaque = tmp_path / "opaque.png"
        Image.open(MUSHROOM).convert("RGB").save(opaque)
        work = tmp_path / "work"
        work.mkdir()
        with pytest.raises(InputRejected, match="alpha selects nothing"):
            model.run(RunInputs(work_dir=work, images=[opaque]), Sam3DObjectsParams(), lambda f, m: None)
        out = model.run(RunInputs(work_dir=work, images=[MUSHROOM], seed=1, texture_resolution=128,
                                  quality="low"), Sam3DObjectsParams(), lambda f, m: None)
        assert pygltflib.GLTF2().load(str(out["mesh"])).textures
        pipeline = weakref.ref(model.pipeline._pipeline)
        model.unload()
        gc.collect()
        assert model.pipeline is None and pipeline() is None
    finally:
        for name in set(sys.modules) - before:
            if name.split(".")[0] in {"inference", "sam3d_objects", "standin_calls"}:
                del sys.modules[name]
