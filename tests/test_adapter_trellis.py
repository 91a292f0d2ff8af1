"""The TRELLIS and TRELLIS.2 adapters (pocket3d.models.adapters.trellis, .trellis2) through pocket3d's HTTP API.

TRELLIS and TRELLIS.2 need CUDA extensions (spconv, flash-attn, nvdiffrast, cumesh, flex_gemm, o_voxel) and are
not packaged, so the server's device worker imports the TEST STAND-INS in tests/support/standins/{trellis,
trellis2, o_voxel}: packages with the real import names and the real entry points, which compute nothing real but
return data of the real types (an icosphere, tensors, a textured trimesh) and note each call, so these tests
check the adapters' wiring: the arguments the presets and parameters become, the GLB written from the result,
errors, availability and unload. They prove nothing about the models themselves.
"""

from __future__ import annotations

import gc
import io
import json
import sys
import weakref
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pygltflib
import pytest
import trimesh
from adapter_harness import STANDINS, standin_env, write_models
from client_helpers import IMAGES, MESHES, SHARED, assert_valid_gltf, stood_up, submit, upload, wait_final
from PIL import Image
from server import ServerProcess
from standin_calls import calls

from pocket3d.models.spec import Device, Feature, ModelSpec, RunInputs, StageCancelled

FAIL_SEED = 4013  # the stand-ins' seed for "the model fails"
IMAGE = IMAGES / "typical_misc_crate.png"
TRELLIS_SAMPLER = {"name": "FlowEulerGuidanceIntervalSampler", "args": {"sigma_min": 1e-5},
                   "params": {"steps": 25, "cfg_strength": 5.0, "cfg_interval": [0.5, 1.0], "rescale_t": 3.0}}
TRELLIS2_SAMPLER = {"name": "FlowEulerGuidanceIntervalSampler", "args": {"sigma_min": 1e-5},
                    "params": {"steps": 12, "guidance_strength": 7.5, "guidance_rescale": 0.7, "rescale_t": 5.0,
                               "guidance_interval": [0.6, 1.0]}}


def _weights(root: Path) -> dict[str, Path]:
    """Weight folders in the real layout's one file the adapters check (pipeline.json / texturing_pipeline.json),
    holding what the stand-ins read: the samplers and their default parameters."""
    trellis, trellis2 = root / "TRELLIS-image-large", root / "TRELLIS.2-4B"
    trellis.mkdir(parents=True)
    trellis2.mkdir(parents=True)
    (trellis / "pipeline.json").write_text(json.dumps({"name": "TrellisImageTo3DPipeline", "args": {
        "sparse_structure_sampler": TRELLIS_SAMPLER, "slat_sampler": TRELLIS_SAMPLER}}))
    (trellis2 / "pipeline.json").write_text(json.dumps({"name": "Trellis2ImageTo3DPipeline", "args": {
        "sparse_structure_sampler": TRELLIS2_SAMPLER, "shape_slat_sampler": TRELLIS2_SAMPLER,
        "tex_slat_sampler": TRELLIS2_SAMPLER, "low_vram": True, "default_pipeline_type": "1024_cascade"}}))
    (trellis2 / "texturing_pipeline.json").write_text(json.dumps({"name": "Trellis2TexturingPipeline", "args": {
        "tex_slat_sampler": TRELLIS2_SAMPLER, "low_vram": True}}))
    return {"trellis": trellis, "trellis2": trellis2, "missing": root / "not-downloaded"}


REGISTRY = """
entry_points: false  # only the models listed here, not the installed built-ins
models:
  mesh_generation:
    trellis-image-large:
      class: "pocket3d.models.adapters.trellis:TrellisImageModel"
      supported_inputs: ["image", "multiview"]
      supported_outputs: ["glb"]
      options: {{weights: {trellis}}}
    trellis-text-xlarge:
      class: "pocket3d.models.adapters.trellis:TrellisTextModel"
      supported_inputs: ["text"]
      supported_outputs: ["glb"]
      options: {{weights: {trellis}}}
    trellis2-4b:
      class: "pocket3d.models.adapters.trellis2:Trellis2ImageModel"
      supported_inputs: ["image"]
      supported_outputs: ["glb"]
      options: {{weights: {trellis2}}}
    trellis-image-not-downloaded:
      class: "pocket3d.models.adapters.trellis:TrellisImageModel"
      supported_inputs: ["image"]
      supported_outputs: ["glb"]
      options: {{weights: {missing}}}
  texture_generation:
    trellis2-4b-texturing:
      class: "pocket3d.models.adapters.trellis2:Trellis2TexturingModel"
      supported_inputs: ["mesh", "image"]
      supported_outputs: ["glb"]
      options: {{weights: {trellis2}}}
"""


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("trellis")
    weights = _weights(root / "weights")
    torch_home = root / "torch"
    (torch_home / "hub" / "facebookresearch_dinov2_main").mkdir(parents=True)  # where torch.hub caches DINOv2
    return {"root": root, "weights": weights, "calls": root / "calls.jsonl", "torch_home": torch_home}


@pytest.fixture(scope="module")
def server(env: dict) -> Iterator[ServerProcess]:
    root = env["root"]
    models = write_models(root, REGISTRY.format(**{k: str(v) for k, v in env["weights"].items()}))
    proc = ServerProcess(root / "data", models=models,
                         env=standin_env(POCKET3D_STANDIN_CALLS=str(env["calls"]),
                                         TORCH_HOME=str(env["torch_home"]))).start(timeout=60)
    yield proc
    proc.stop()


@pytest.fixture
def client(server: ServerProcess) -> Iterator[httpx.Client]:
    with server.client() as c:
        c.timeout = 60
        yield c


def _run(client: httpx.Client, route: str, body: dict) -> dict:
    job = wait_final(client, submit(client, route, body)["job_id"], timeout=90)
    assert job["status"] == "succeeded", job.get("error")
    return job


def _glb(client: httpx.Client, job: dict, tmp_path: Path) -> tuple[pygltflib.GLTF2, trimesh.Trimesh]:
    output = next(o for o in job["outputs"] if o["name"] == "model.glb")
    data = client.get(output["url"].removeprefix("/api/v1")).content
    assert assert_valid_gltf(data, tmp_path)["numErrors"] == 0
    gltf = pygltflib.GLTF2.load_from_bytes(data)
    scene = trimesh.load(io.BytesIO(data), file_type="glb")
    mesh = trimesh.util.concatenate(list(scene.geometry.values()))
    assert len(mesh.faces) > 0
    return gltf, mesh


def _texture_sizes(gltf: pygltflib.GLTF2) -> list[tuple[int, int]]:
    sizes = []
    for image in gltf.images:
        view = gltf.bufferViews[image.bufferView]
        blob = gltf.binary_blob()[view.byteOffset or 0:(view.byteOffset or 0) + view.byteLength]
        sizes.append(Image.open(io.BytesIO(blob)).size)
    return sizes


def _last(env: dict, entry: str) -> dict:
    found = calls(env["calls"], entry)
    assert found, f"the stand-in's {entry} was not called"
    return found[-1]


# -- TRELLIS -------------------------------------------------------------------------------------------------------


def test_image_to_a_textured_glb_with_the_low_preset(client: httpx.Client, env: dict, tmp_path: Path) -> None:
    image = upload(client, IMAGE)["file_id"]
    job = _run(client, "/mesh/generate", {"images": [image], "model_preference": "trellis-image-large",
                                          "quality": "low", "seed": 7, "texture_resolution": 512})
    gltf, _ = _glb(client, job, tmp_path)
    assert _texture_sizes(gltf) == [(512, 512)], "the request's texture_resolution reached to_glb"
    pbr = gltf.materials[0].pbrMetallicRoughness
    assert pbr.baseColorTexture is not None and pbr.metallicFactor == 0, "base colour only: not metallic"
    run = _last(env, "trellis.run")
    assert run["seed"] == 7 and run["preprocess_image"] is True and run["formats"] == ["gaussian", "mesh"]
    assert run["image"]["mode"] == "RGBA" and run["image"]["transparent_pixels"] > 0, "the cut-out, alpha kept"
    assert run["sparse_structure_sampler_params"] == {"steps": 8}, "low: 8 steps, guidance left to pipeline.json"
    assert run["slat_sampler_params"] == {"steps": 8}
    assert [(s["steps"], s["cfg_strength"]) for s in calls(env["calls"], "trellis.sampler")[-2:]] == [(8, 5.0)] * 2
    to_glb = _last(env, "trellis.to_glb")
    assert to_glb["simplify"] == 0.97 and to_glb["texture_size"] == 512
    assert to_glb["grad_enabled"] is True, "to_glb bakes by optimisation: autograd must be on"
    assert not calls(env["calls"], "trellis.rembg"), "the image had alpha: TRELLIS's own rembg stayed unused"


def test_views_go_to_run_multi_image_and_client_parameters_win(client: httpx.Client, env: dict,
                                                              tmp_path: Path) -> None:
    # named views reach TRELLIS (which places views itself) as images in the order front, left, back, right
    named = {"back": "character_3.png", "left": "character_1.png", "front": "character_2.png"}
    views = {name: upload(client, SHARED / "multiview" / file)["file_id"] for name, file in named.items()}
    job = _run(client, "/mesh/generate", {
        "views": views, "model_preference": "trellis-image-large", "quality": "high", "seed": 11,
        "texture_resolution": 256,
        "parameters": {"ss_sampling_steps": 5, "slat_guidance_strength": 2.5, "mesh_simplify": 0.92,
                       "multiimage_algo": "multidiffusion"}})
    _glb(client, job, tmp_path)
    run = _last(env, "trellis.run_multi_image")
    assert len(run["images"]) == 3 and run["mode"] == "multidiffusion" and run["seed"] == 11
    widths = {file: Image.open(SHARED / "multiview" / file).width for file in named.values()}
    assert [i["size"][0] for i in run["images"]] == [widths[named[n]] for n in ("front", "left", "back")]
    assert run["sparse_structure_sampler_params"] == {"steps": 5}, "the client's steps over the high preset's"
    assert run["slat_sampler_params"] == {"steps": 25, "cfg_strength": 2.5}
    assert _last(env, "trellis.to_glb")["simplify"] == 0.92, "the client's over the high preset's 0.9"


def test_text_to_a_textured_glb(client: httpx.Client, env: dict, tmp_path: Path) -> None:
    job = _run(client, "/mesh/generate", {"text_prompt": "a small red lantern", "texture_resolution": 256,
                                          "model_preference": "trellis-text-xlarge", "seed": 3})
    gltf, _ = _glb(client, job, tmp_path)
    assert gltf.textures
    run = _last(env, "trellis.text.run")
    assert run["prompt"] == "a small red lantern" and run["seed"] == 3
    assert run["sparse_structure_sampler_params"] == {"steps": 12}, "medium: the demo's 12 steps"


def test_requests_the_models_cannot_take_are_refused(client: httpx.Client) -> None:
    image = upload(client, IMAGE)["file_id"]
    r = client.post("/mesh/generate", json={"images": [image], "model_preference": "trellis-image-large",
                                            "parameters": {"multiimage_algo": "stochastic"}})
    assert r.status_code == 422 and r.json()["error_code"] == "INVALID_REQUEST", r.text
    assert "two or more views" in r.json()["message"]
    r = client.post("/mesh/generate", json={"images": [image], "model_preference": "trellis-image-large",
                                            "parameters": {"ss_sampling_steps": 0}})
    assert r.status_code == 422 and r.json()["error_code"] == "INVALID_PARAMETERS", r.text
    r = client.post("/mesh/generate", json={"images": [image], "model_preference": "trellis2-4b",
                                            "parameters": {"resolution": 768}})
    assert r.status_code == 422 and r.json()["error_code"] == "INVALID_PARAMETERS", r.text
    r = client.post("/mesh/generate", json={"images": [image], "model_preference": "trellis2-4b",
                                            "parameters": {"cfg_strength": 3}})
    assert r.status_code == 422 and "cfg_strength" in r.json()["message"], r.text
    r = client.post("/mesh/generate", json={"images": [image, image], "model_preference": "trellis2-4b"})
    assert r.status_code == 422 and r.json()["error_code"] == "MODEL_INPUT_MISMATCH", r.text


def test_an_image_without_an_opaque_object_fails_as_invalid_input(client: httpx.Client, env: dict,
                                                                  tmp_path: Path) -> None:
    faint = np.zeros((64, 64, 4), np.uint8)
    faint[..., :3], faint[..., 3] = 200, 0
    faint[16:48, 16:48, 3] = 120  # something there, but nowhere above the 80% opacity TRELLIS crops to
    Image.fromarray(faint).save(tmp_path / "faint.png")
    before = len(calls(env["calls"], "trellis.run"))
    image = upload(client, tmp_path / "faint.png")["file_id"]
    job = wait_final(client, submit(client, "/mesh/generate", {
        "images": [image], "model_preference": "trellis-image-large"})["job_id"], timeout=60)
    assert job["status"] == "failed" and job["error"]["code"] == "INVALID_INPUT", job
    assert "no opaque object" in job["error"]["message"]
    assert len(calls(env["calls"], "trellis.run")) == before, "refused before the pipeline ran"


def test_a_failing_model_fails_the_job_with_its_message(client: httpx.Client) -> None:
    for model in ("trellis-image-large", "trellis2-4b"):
        image = upload(client, IMAGE)["file_id"]
        job = wait_final(client, submit(client, "/mesh/generate", {
            "images": [image], "model_preference": model, "seed": FAIL_SEED})["job_id"], timeout=90)
        assert job["status"] == "failed" and job["error"]["code"] == "MODEL_ERROR", job
        assert f"failure requested by seed {FAIL_SEED}" in job["error"]["message"]


def test_missing_weights_make_the_model_unavailable(client: httpx.Client, env: dict) -> None:
    models = {m["id"]: m for m in client.get("/system/models").json()["models"]}
    for available in ("trellis-image-large", "trellis-text-xlarge", "trellis2-4b", "trellis2-4b-texturing"):
        assert models[available]["available"], models[available]
    missing = models["trellis-image-not-downloaded"]
    assert not missing["available"]
    assert f"weights not found at {env['weights']['missing']}" in missing["unavailable_reasons"]
    image = upload(client, IMAGE)["file_id"]
    r = client.post("/mesh/generate", json={"images": [image], "model_preference": "trellis-image-not-downloaded"})
    assert r.status_code == 503 and r.json()["error_code"] == "MODEL_UNAVAILABLE"
    assert str(env["weights"]["missing"]) in r.json()["message"]


# -- TRELLIS.2 -----------------------------------------------------------------------------------------------------


def test_trellis2_image_to_a_pbr_glb(client: httpx.Client, env: dict, tmp_path: Path) -> None:
    image = upload(client, IMAGE)["file_id"]
    job = _run(client, "/mesh/generate", {
        "images": [image], "model_preference": "trellis2-4b", "seed": 5, "texture_resolution": 256,
        "parameters": {"shape_slat_guidance_strength": 6.0, "tex_slat_rescale_t": 2.0, "remesh": False}})
    gltf, _ = _glb(client, job, tmp_path)
    pbr = gltf.materials[0].pbrMetallicRoughness
    assert pbr.baseColorTexture is not None and pbr.metallicRoughnessTexture is not None, "PBR textures"
    assert _texture_sizes(gltf) == [(256, 256)] * 2
    run = _last(env, "trellis2.run")
    assert run["seed"] == 5 and run["pipeline_type"] == "1024_cascade", "medium: 1024³, cascaded as app.py does"
    assert run["sparse_structure_sampler_params"] == {"steps": 12}
    assert run["shape_slat_sampler_params"] == {"steps": 12, "guidance_strength": 6.0}
    assert run["tex_slat_sampler_params"] == {"steps": 12, "rescale_t": 2.0}
    assert run["max_num_tokens"] == 49152, "the library's default when the client sets none"
    shape = [c for c in calls(env["calls"], "trellis2.sampler") if c["desc"] == "Sampling shape SLat"][-2:]
    assert [(c["guidance_strength"], c["guidance_rescale"]) for c in shape] == [(6.0, 0.7)] * 2, \
        "both cascade passes got the client's guidance over pipeline.json's rescale"
    export = _last(env, "o_voxel.to_glb")
    assert export["voxel_size"] == 1 / 1024 and export["aabb"] == [[-0.5] * 3, [0.5] * 3]
    assert (export["decimation_target"], export["texture_size"], export["remesh"]) == (500_000, 256, False)
    assert (export["remesh_band"], export["remesh_project"]) == (1, 0)
    assert export["layout"] == ["alpha", "base_color", "metallic", "roughness"]


def test_trellis2_presets_set_the_resolution(client: httpx.Client, env: dict, tmp_path: Path) -> None:
    for quality, pipeline_type, steps, faces in (("low", "512", 8, 200_000), ("high", "1536_cascade", 16, 1_000_000)):
        image = upload(client, IMAGE)["file_id"]  # a job's inputs are released when it ends
        _run(client, "/mesh/generate", {"images": [image], "model_preference": "trellis2-4b", "quality": quality,
                                        "seed": 1, "texture_resolution": 128})
        run = _last(env, "trellis2.run")
        assert run["pipeline_type"] == pipeline_type
        assert run["tex_slat_sampler_params"] == {"steps": steps}
        assert _last(env, "o_voxel.to_glb")["decimation_target"] == faces
    image = upload(client, IMAGE)["file_id"]
    _run(client, "/mesh/generate", {"images": [image], "model_preference": "trellis2-4b", "quality": "high",
                                    "seed": 1, "texture_resolution": 128,
                                    "parameters": {"resolution": 512, "max_num_tokens": 32768}})
    run = _last(env, "trellis2.run")
    assert (run["pipeline_type"], run["max_num_tokens"]) == ("512", 32768), "the client's resolution wins"


def test_trellis2_textures_a_given_mesh_in_place(client: httpx.Client, env: dict, tmp_path: Path) -> None:
    source = MESHES / "typical_creature_elephant.obj"
    mesh = upload(client, source)["file_id"]
    image = upload(client, IMAGES / "typical_creature_elephant.png")["file_id"]
    job = _run(client, "/texture/generate", {"mesh": mesh, "images": [image], "quality": "low", "seed": 9,
                                             "texture_resolution": 256,
                                             "model_preference": "trellis2-4b-texturing",
                                             "parameters": {"up_axis": "z", "tex_slat_guidance_strength": 2.0}})
    gltf, out = _glb(client, job, tmp_path)
    assert gltf.materials[0].pbrMetallicRoughness.baseColorTexture is not None
    run = _last(env, "trellis2.texturing.run")
    assert (run["resolution"], run["seed"], run["texture_size"]) == (512, 9, 256)
    assert run["tex_slat_sampler_params"] == {"steps": 8, "guidance_strength": 2.0}
    given = stood_up(trimesh.load(source, force="mesh"))  # the up_axis parameter said Z: pocket3d turned it
    given_size, handed = given.extents, np.ptp(np.asarray(run["bounds"]), axis=0)
    assert np.allclose(handed, given_size, rtol=1e-6), "handed over Y-up, as it expects"
    assert np.allclose(out.bounds, given.bounds, atol=1e-4 * given_size.max()), \
        "the textured mesh is where the given one was, turned Y-up, at its size"
    assert job["orientation"]["source"] == "parameter" and job["orientation"]["detected"] == "z"
    mesh = upload(client, source)["file_id"]  # the job's inputs were released when it ended
    image = upload(client, IMAGES / "typical_creature_elephant.png")["file_id"]
    r = client.post("/texture/generate", json={"mesh": mesh, "images": [image, image],
                                               "model_preference": "trellis2-4b-texturing"})
    assert r.status_code == 422, r.text
    r = client.post("/texture/generate", json={"mesh": mesh, "text_prompt": "grey stone",
                                               "model_preference": "trellis2-4b-texturing"})
    assert r.status_code == 422 and r.json()["error_code"] == "MODEL_INPUT_MISMATCH", \
        "a prompt alone: this registry has no text-to-image model to draw it as the reference image"


# -- in-process: unload, cancellation, availability, the allocator ------------------------------------------------


@pytest.fixture
def standins(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    """The stand-ins importable in this process; afterwards the stand-in packages are forgotten again."""
    monkeypatch.syspath_prepend(str(STANDINS))
    monkeypatch.setenv("POCKET3D_STANDIN_CALLS", str(tmp_path / "calls.jsonl"))
    yield tmp_path
    for name in [n for n in sys.modules if n.split(".")[0] in ("trellis", "trellis2", "o_voxel")]:
        del sys.modules[name]


def _adapter(cls: type, weights: Path, feature: Feature = Feature.MESH_GENERATION) -> object:
    adapter = cls(ModelSpec(cls.__name__, feature, frozenset({"image"}), ("glb",), options={"weights": str(weights)}))
    adapter.load(Device("cpu", "cpu", "CPU", 1024))
    return adapter


def test_unload_lets_the_pipelines_go_and_the_step_hooks_are_removed(standins: Path) -> None:
    from pocket3d.models.adapters.trellis import TrellisImageModel, TrellisImageParams
    from pocket3d.models.adapters.trellis2 import Trellis2ImageModel, Trellis2Params

    weights = _weights(standins / "weights")
    for cls, params, folder, samplers in (
            (TrellisImageModel, TrellisImageParams(), weights["trellis"], ("sparse_structure_sampler", "slat_sampler")),
            (Trellis2ImageModel, Trellis2Params(), weights["trellis2"],
             ("sparse_structure_sampler", "shape_slat_sampler", "tex_slat_sampler"))):
        adapter = _adapter(cls, folder)
        messages: list[str | None] = []
        work = standins / cls.__name__
        work.mkdir()
        out = adapter.run(RunInputs(work_dir=work, images=[IMAGE], quality="low", seed=2, texture_resolution=128),
                          params,
                          lambda fraction, message=None, seen=messages: seen.append(message))
        assert out["mesh"].is_file()
        assert any(m and m.endswith("step 8/8") for m in messages), "progress per sampling step"
        assert all("sample_once" not in vars(getattr(adapter.pipeline, s)) for s in samplers), "hooks removed"
        pipeline = weakref.ref(adapter.pipeline)
        adapter.unload()
        gc.collect()
        assert pipeline() is None, f"{cls.__name__}.unload dropped every reference to the pipeline"


def test_a_cancelled_job_stops_at_the_next_sampling_step(standins: Path) -> None:
    from pocket3d.models.adapters.trellis2 import Trellis2ImageModel, Trellis2Params

    adapter = _adapter(Trellis2ImageModel, _weights(standins / "weights")["trellis2"])
    seen: list[str | None] = []

    def progress(fraction: float, message: str | None = None) -> None:
        seen.append(message)
        if message == "shape, pass 1/2: step 3/12":
            raise StageCancelled()

    with pytest.raises(StageCancelled):
        adapter.run(RunInputs(work_dir=standins, images=[IMAGE], seed=1), Trellis2Params(), progress)
    assert seen[-1] == "shape, pass 1/2: step 3/12" and not calls(standins / "calls.jsonl", "o_voxel.to_glb")
    assert "sample_once" not in vars(adapter.pipeline.shape_slat_sampler), "the hook is gone after a cancel too"
    adapter.unload()


def test_offline_without_dinov2_in_the_torch_hub_cache_is_an_unavailable_reason(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from pocket3d.models.adapters.trellis import TrellisImageModel

    weights = _weights(tmp_path / "weights")["trellis"]
    spec = ModelSpec("trellis", Feature.MESH_GENERATION, frozenset({"image"}), ("glb",),
                     options={"weights": str(weights)})
    monkeypatch.syspath_prepend(str(STANDINS))  # "trellis" is findable
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    reasons = TrellisImageModel.unavailable_reasons(spec)
    assert len(reasons) == 1 and "DINOv2" in reasons[0] and str(tmp_path / "torch" / "hub") in reasons[0]
    (tmp_path / "torch" / "hub" / "facebookresearch_dinov2_main").mkdir(parents=True)
    assert TrellisImageModel.unavailable_reasons(spec) == []
    monkeypatch.delenv("HF_HUB_OFFLINE")
    (tmp_path / "torch" / "hub" / "facebookresearch_dinov2_main").rmdir()
    assert TrellisImageModel.unavailable_reasons(spec) == [], "online, torch.hub fetches it at load"


def test_expandable_segments_are_set_before_cuda_starts_unless_already_chosen() -> None:
    from pocket3d.models.adapters.trellis2 import enable_expandable_segments

    environ: dict[str, str] = {}
    assert enable_expandable_segments(environ) == "variable"
    assert environ == {"PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True"}
    environ = {"PYTORCH_CUDA_ALLOC_CONF": "max_split_size_mb:512"}
    enable_expandable_segments(environ)
    assert environ["PYTORCH_CUDA_ALLOC_CONF"] == "max_split_size_mb:512,expandable_segments:True"
    environ = {"PYTORCH_ALLOC_CONF": "garbage_collection_threshold:0.8"}
    enable_expandable_segments(environ)
    assert environ == {"PYTORCH_ALLOC_CONF": "garbage_collection_threshold:0.8,expandable_segments:True"}, \
        "PyTorch reads PYTORCH_ALLOC_CONF first when it is set"
    environ = {"PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:False"}
    assert enable_expandable_segments(environ) == "kept"
    assert environ == {"PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:False"}, "the operator's choice stands"


def test_a_prompt_drawn_as_the_image_is_accepted_by_the_image_models() -> None:
    """pocket3d draws a prompt for an image model (text_to_image) and hands it the drawing with the prompt."""
    from pocket3d.models.adapters import trellis, trellis2

    trellis.TrellisImageModel.check_request(images=1, text="a red chair", params=trellis.TrellisImageParams())
    trellis2.Trellis2ImageModel.check_request(images=1, text="a red chair", params=trellis2.Trellis2Params())
    trellis2.Trellis2TexturingModel.check_request(images=1, text="grey stone",
                                                  params=trellis2.Trellis2TexturingParams())
