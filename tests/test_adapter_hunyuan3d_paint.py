"""Hunyuan3D-2 paint (``hy3dgen.texgen``) and Hunyuan3D-2.1 shape and PBR paint (``hy3dshape``, ``hy3dpaint`` from a
checkout) through pocket3d's HTTP API, against TEST STAND-INs of those libraries: their CUDA extensions cannot be
built here. The tests prove the adapters' wiring (the arguments the libraries get, their outputs turned into a
valid GLB, errors, availability, unload), not the models.

Where the stand-ins are, and how they get on the path:

- ``tests/support/standins_hunyuan3d`` (on the server's ``PYTHONPATH``, for these tests only): a ``hy3dgen`` package
  that *joins* the real installed one (``pkgutil.extend_path``), so ``hy3dgen.texgen`` is the stand-in while
  ``hy3dgen.shapegen`` stays the real code; and ``custom_rasterizer_kernel``, ``bpy``, ``realesrgan``, empty
  modules for the availability checks. The in-process tests swap ``sys.modules['hy3dgen.texgen']`` for the
  stand-in module instead.
- ``tests/support/standin_checkouts/Hunyuan3D-2.1``: a fake checkout with the real layout, copied to a temporary
  folder (plus what its README has one build or download) and named by ``options.source``, as a real one would be.

The stand-ins fail when given a reference image of exactly 13 x 13 pixels: that is how a test makes the model fail.
"""

from __future__ import annotations

import gc
import importlib.util
import io
import os
import shutil
import subprocess
import sys
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path

import httpx
import numpy as np
import pygltflib
import pytest
import trimesh
from adapter_harness import standin_env, write_models
from client_helpers import MESHES, assert_valid_gltf, stood_up, submit, upload, wait_final
from PIL import Image
from server import SUPPORT, ServerProcess
from standin_calls import ENV as CALLS_ENV
from standin_calls import calls

from pocket3d.models.adapters.hunyuan3d_21 import Hunyuan3D21PaintModel, Hunyuan3D21ShapeModel
from pocket3d.models.adapters.hunyuan3d_paint import Hunyuan3DPaintModel
from pocket3d.models.spec import Device, Feature, InputRejected, ModelSpec, RunInputs, StageCancelled

STANDINS = SUPPORT / "standins_hunyuan3d"
CHECKOUT = SUPPORT / "standin_checkouts" / "Hunyuan3D-2.1"
GOBLIN = MESHES / "typical_humanoid_goblin.obj"
RED = (200, 30, 40)
CPU = Device(id="cpu", kind="cpu", name="cpu", memory_total=8192)


# -- test data ----------------------------------------------------------------------------------------------------


def disc_image(path: Path, size: int = 96, colour: tuple[int, int, int] = RED) -> Path:
    """A cut-out: a disc of one colour on a transparent background."""
    yy, xx = np.mgrid[:size, :size]
    inside = (xx - size / 2) ** 2 + (yy - size / 2) ** 2 < (size * 0.35) ** 2
    rgba = np.zeros((size, size, 4), np.uint8)
    rgba[inside] = (*colour, 255)
    Image.fromarray(rgba, "RGBA").save(path)
    return path


def hy3dgen_weights(root: Path) -> Path:
    """The layout Hunyuan3DPaintPipeline.from_pretrained reads from a local folder (the files are empty)."""
    for folder in ("hunyuan3d-delight-v2-0", "hunyuan3d-paint-v2-0"):
        (root / folder).mkdir(parents=True)
        (root / folder / "model_index.json").write_text("{}")
    return root


def shape21_weights(root: Path) -> Path:
    (root / "hunyuan3d-dit-v2-1").mkdir(parents=True)
    for name in ("config.yaml", "model.fp16.ckpt"):
        (root / "hunyuan3d-dit-v2-1" / name).write_text("")
    return root


def hub_cache(root: Path, repo: str, files: list[str]) -> Path:
    """A Hugging Face hub cache holding ``files`` of ``repo`` (what huggingface_hub finds offline)."""
    commit = "0" * 40
    repo_dir = root / f"models--{repo.replace('/', '--')}"
    (repo_dir / "refs").mkdir(parents=True)
    (repo_dir / "refs" / "main").write_text(commit)
    for name in files:
        path = repo_dir / "snapshots" / commit / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("{}")
    return root


def checkout_copy(root: Path, built: bool = True) -> Path:
    """The fake checkout, and when ``built`` what its README has one add: the RealESRGAN weights and the compiled
    mesh inpainter (empty files: the stand-in pipeline reads neither)."""
    shutil.copytree(CHECKOUT, root, ignore=shutil.ignore_patterns("__pycache__"))
    if built:
        (root / "hy3dpaint" / "ckpt").mkdir()
        (root / "hy3dpaint" / "ckpt" / "RealESRGAN_x4plus.pth").write_bytes(b"stand-in")
        renderer = root / "hy3dpaint" / "DifferentiableRenderer"
        renderer.mkdir()
        (renderer / f"mesh_inpaint_processor{EXTENSION_SUFFIXES[0]}").write_bytes(b"")
    return root


def models_yaml(tmp: Path, *, h3d2: Path, shape21: Path, checkout: Path, dino: Path) -> str:
    adapters = "pocket3d.models.adapters"
    cpu = 'devices: ["cpu"]\n      vram_requirement: 0\n      supported_outputs: ["glb", "obj"]'
    return f"""
entry_points: false  # only the models listed here, not the installed built-ins
models:
  mesh_generation:
    hunyuan3d-2.1:
      class: "{adapters}.hunyuan3d_21:Hunyuan3D21ShapeModel"
      supported_inputs: ["image"]
      {cpu}
      textured: false
      paint_with: hunyuan3d-2.1-paint
      options: {{source: "{checkout}", weights: "{shape21}"}}
    hunyuan3d-2.1-no-checkout:
      class: "{adapters}.hunyuan3d_21:Hunyuan3D21ShapeModel"
      supported_inputs: ["image"]
      {cpu}
      textured: false
      options: {{source: "{tmp / 'no-such-checkout'}", weights: "{shape21}"}}
  texture_generation:
    hunyuan3d-2-paint:
      class: "{adapters}.hunyuan3d_paint:Hunyuan3DPaintModel"
      supported_inputs: ["mesh", "image", "multiview"]
      {cpu}
      options: {{weights: "{h3d2}"}}
    hunyuan3d-2-paint-no-weights:
      class: "{adapters}.hunyuan3d_paint:Hunyuan3DPaintModel"
      supported_inputs: ["mesh", "image"]
      {cpu}
      options: {{weights: "{tmp / 'no-such-weights'}"}}
    hunyuan3d-2.1-paint:
      class: "{adapters}.hunyuan3d_21:Hunyuan3D21PaintModel"
      supported_inputs: ["mesh", "image"]
      {cpu}
      options: {{source: "{checkout}", dino_weights: "{dino}"}}
"""


# -- one server for the module --------------------------------------------------------------------------------------


@dataclass
class Served:
    client: httpx.Client
    calls_file: Path
    tmp: Path
    checkout: Path
    h3d2: Path

    def calls(self, entry: str) -> list[dict]:
        return calls(self.calls_file, entry)

    def upload_image(self, name: str, **kwargs) -> str:
        return upload(self.client, disc_image(self.tmp / name, **kwargs))["file_id"]

    def upload_mesh(self) -> str:
        return upload(self.client, GOBLIN)["file_id"]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("hunyuan3d")
    (tmp / "dinov2").mkdir()
    h3d2 = hy3dgen_weights(tmp / "hy3dgen-weights")
    checkout = checkout_copy(tmp / "Hunyuan3D-2.1")
    models = write_models(tmp, models_yaml(tmp, h3d2=h3d2, shape21=shape21_weights(tmp / "shape21"),
                                           checkout=checkout, dino=tmp / "dinov2"))
    calls_file = tmp / "calls.jsonl"
    env = standin_env(**{CALLS_ENV: str(calls_file), "HF_HUB_CACHE": str(tmp / "hf"),
                         "HF_HOME": str(tmp / "hf-home")})
    env["PYTHONPATH"] = f"{STANDINS}:{env['PYTHONPATH']}"
    hub_cache(tmp / "hf", "tencent/Hunyuan3D-2.1", ["hunyuan3d-paintpbr-v2-1/model_index.json"])
    proc = ServerProcess(tmp / "data", env=env, models=models).start()
    try:
        with proc.client() as client:
            client.timeout = 60
            yield Served(client, calls_file, tmp, checkout, h3d2)
    finally:
        proc.stop()


def run_job(served: Served, route: str, body: dict, status: str = "succeeded") -> dict:
    job = submit(served.client, route, body)
    job = wait_final(served.client, job["job_id"], timeout=60)
    assert job["status"] == status, (job["error"], job["stages"])
    return job


def glb_of(served: Served, job: dict) -> tuple[bytes, pygltflib.GLTF2]:
    output = next(o for o in job["outputs"] if o["name"] == "model.glb")
    r = served.client.get(output["url"].removeprefix("/api/v1"))
    assert r.status_code == 200
    assert assert_valid_gltf(r.content, served.tmp)["numErrors"] == 0
    return r.content, pygltflib.GLTF2.load_from_bytes(r.content)


def texture(gltf: pygltflib.GLTF2, index: int) -> np.ndarray:
    """The image of texture ``index`` of the GLB, as an array."""
    image = gltf.images[gltf.textures[index].source]
    view = gltf.bufferViews[image.bufferView]
    start = view.byteOffset or 0
    with Image.open(io.BytesIO(gltf.binary_blob()[start:start + view.byteLength])) as img:
        return np.asarray(img.convert("RGB"))


# -- Hunyuan3D-2 paint ----------------------------------------------------------------------------------------------


def test_paint_a_mesh_from_a_cut_out(served: Served) -> None:
    job = run_job(served, "/texture/generate", {
        "mesh": served.upload_mesh(), "images": [served.upload_image("red.png")],
        "model_preference": "hunyuan3d-2-paint", "quality": "low", "texture_resolution": 2048,
        "parameters": {"render_size": 1536, "max_faces": 3000}})
    assert job["model"] == "hunyuan3d-2-paint"
    data, gltf = glb_of(served, job)
    (material,) = gltf.materials
    base = texture(gltf, material.pbrMetallicRoughness.baseColorTexture.index)
    assert base.shape == (2048, 2048, 3), "the texture has the resolution asked for"
    assert np.abs(base.reshape(-1, 3).mean(axis=0) - RED).max() < 12, "painted from the reference image"
    mesh = trimesh.load(io.BytesIO(data), file_type="glb", force="mesh")
    source = stood_up(trimesh.load(GOBLIN, force="mesh"))  # the Z-up file, as pocket3d stood it up
    assert np.allclose(mesh.bounds, source.bounds, atol=0.02 * source.scale), "the geometry given, in place"

    loads = served.calls("hy3dgen.texgen.from_pretrained")
    assert loads and all(c == {"model_path": str(served.h3d2), "api": "2.0.2"} for c in loads), \
        "PyPI 2.0.2 takes no subfolder"
    call = served.calls("hy3dgen.texgen.__call__")[-1]
    # the client's render size wins over the low preset's 1024; the low preset caps the bake at 1024
    assert call["render_size"] == 1536 and call["renderer_resolution"] == [1536, 1536]
    assert call["kernel_size"] == 6, "the renderer's view-border erosion follows the render size"
    assert call["texture_size"] == 1024 and call["renderer_texture_size"] == [1024, 1024]
    assert call["faces"] <= 3000 < len(source.faces), "reduced to max_faces before unwrapping"
    assert call["images"] == 1 and call["image_modes"] == ["RGBA"], "the cut-out, with its alpha"
    assert call["views"] == 6
    assert not served.calls("hy3dgen.texgen.enable_model_cpu_offload")


def test_paint_failures_end_the_job_with_the_reason(served: Served) -> None:
    mesh = served.upload_mesh
    job = run_job(served, "/texture/generate", {
        "mesh": mesh(), "images": [served.upload_image("tiny.png", size=13)],
        "model_preference": "hunyuan3d-2-paint"}, status="failed")
    assert job["error"]["code"] == "MODEL_ERROR"
    assert "TEST STAND-IN hy3dgen.texgen: failing as asked" in job["error"]["message"]

    # PyPI 2.0.2 paints from one image: two are refused by the adapter, not passed on to fail inside
    views = [served.upload_image(f"view{i}.png") for i in (1, 2)]
    job = run_job(served, "/texture/generate", {"mesh": mesh(), "images": views,
                                                "model_preference": "hunyuan3d-2-paint"}, status="failed")
    assert job["error"]["code"] == "INVALID_INPUT" and "one reference image" in job["error"]["message"]

    clear = served.tmp / "clear.png"
    Image.new("RGBA", (32, 32), (0, 0, 0, 0)).save(clear)
    job = run_job(served, "/texture/generate", {"mesh": mesh(), "images": [upload(served.client, clear)["file_id"]],
                                                "model_preference": "hunyuan3d-2-paint"}, status="failed")
    assert job["error"]["code"] == "INVALID_INPUT" and "fully transparent" in job["error"]["message"]


def test_requests_the_paint_models_cannot_take_are_refused_at_once(served: Served) -> None:
    mesh_id = served.upload_mesh()
    image = served.upload_image("one.png")
    cases = [
        ({"images": [image] * 5}, "hunyuan3d-2-paint", "INVALID_REQUEST", "at most 4"),
        ({"images": [image], "parameters": {"steps": 10}}, "hunyuan3d-2-paint", "INVALID_PARAMETERS", "steps"),
        ({"images": [image], "parameters": {"render_size": 100000}}, "hunyuan3d-2-paint", "INVALID_PARAMETERS",
         "render_size"),
        ({"text_prompt": "a red goblin"}, "hunyuan3d-2-paint", "MODEL_INPUT_MISMATCH", "text"),
        ({"images": [image, image]}, "hunyuan3d-2.1-paint", "MODEL_INPUT_MISMATCH", "multiview"),
        ({"images": [image], "parameters": {"max_num_view": 12}}, "hunyuan3d-2.1-paint", "INVALID_PARAMETERS",
         "max_num_view"),
        ({"images": [image], "parameters": {"resolution": 640}}, "hunyuan3d-2.1-paint", "INVALID_PARAMETERS",
         "resolution"),
    ]
    for body, model, code, words in cases:
        r = served.client.post("/texture/generate", json={"mesh": mesh_id, "model_preference": model, **body})
        assert r.status_code == 422 and r.json()["error_code"] == code, (body, r.text)
        assert words in r.text, r.text
    r = served.client.post("/mesh/generate", json={"images": [image, image], "model_preference": "hunyuan3d-2.1"})
    assert r.status_code == 422 and r.json()["error_code"] == "MODEL_INPUT_MISMATCH", r.text


def test_models_without_weights_or_checkout_are_listed_unavailable_and_refused(served: Served) -> None:
    listed = {m["id"]: m for m in served.client.get("/system/models").json()["models"]}
    for ready in ("hunyuan3d-2-paint", "hunyuan3d-2.1", "hunyuan3d-2.1-paint"):
        assert listed[ready]["available"], listed[ready]
    (reason,) = listed["hunyuan3d-2-paint-no-weights"]["unavailable_reasons"]
    assert reason == f"weights not found at {served.tmp / 'no-such-weights'}"
    (reason,) = listed["hunyuan3d-2.1-no-checkout"]["unavailable_reasons"]
    assert reason == f"source checkout not found at {served.tmp / 'no-such-checkout'}"

    mesh_id, image = served.upload_mesh(), served.upload_image("any.png")
    r = served.client.post("/texture/generate", json={"mesh": mesh_id, "images": [image],
                                                      "model_preference": "hunyuan3d-2-paint-no-weights"})
    assert r.status_code == 503 and r.json()["error_code"] == "MODEL_UNAVAILABLE", r.text
    assert "weights not found" in r.json()["message"]
    r = served.client.post("/mesh/generate", json={"images": [image], "model_preference": "hunyuan3d-2.1-no-checkout"})
    assert r.status_code == 503 and r.json()["error_code"] == "MODEL_UNAVAILABLE", r.text
    assert "source checkout not found" in r.json()["message"]


# -- Hunyuan3D-2.1 --------------------------------------------------------------------------------------------------


def test_a_hunyuan3d_21_shape_is_painted_with_pbr_maps(served: Served) -> None:
    job = run_job(served, "/mesh/generate", {
        "images": [served.upload_image("shape.png")], "model_preference": "hunyuan3d-2.1", "quality": "low",
        "texture_resolution": 512, "seed": 7, "parameters": {"max_faces": 500}})
    assert job["model"] == "hunyuan3d-2.1"
    data, gltf = glb_of(served, job)
    (material,) = gltf.materials
    pbr = material.pbrMetallicRoughness
    base = texture(gltf, pbr.baseColorTexture.index)
    assert pbr.metallicRoughnessTexture is not None, "PBR: a metallicRoughness texture"
    mr = texture(gltf, pbr.metallicRoughnessTexture.index)
    assert base.shape == mr.shape == (512, 512, 3)
    assert np.abs(base.reshape(-1, 3).mean(axis=0) - RED).max() < 12
    # the stand-in paints roughness 0.75 and metallic 0.25: glTF keeps roughness in G and metallic in B
    assert abs(mr[..., 1].mean() - 0.75 * 255) < 6 and abs(mr[..., 2].mean() - 0.25 * 255) < 6
    assert pbr.metallicFactor == 1.0 and pbr.roughnessFactor == 1.0

    loaded = served.calls("hy3dshape.from_pretrained")[-1]
    assert loaded["subfolder"] == "hunyuan3d-dit-v2-1" and loaded["variant"] == "fp16"
    assert loaded["use_safetensors"] is False and loaded["dtype"] == "torch.float32", "float32 on the CPU"
    shaped = served.calls("hy3dshape.__call__")[-1]
    assert (shaped["num_inference_steps"], shaped["octree_resolution"]) == (20, 196), "the low preset"
    assert shaped["generator"] == "Generator" and shaped["image_mode"] == "RGBA"
    reduced = served.calls("hy3dshape.FaceReducer")[-1]
    assert reduced["max_facenum"] == 500
    assert mesh_faces(data) <= 500

    painted = served.calls("hy3dpaint.__call__")[-1]
    assert painted["save_glb"] is False and painted["use_remesh"] is True
    assert (painted["max_num_view"], painted["resolution"]) == (6, 512), "the painter ran on the low preset"
    assert painted["texture_size"] == 1024 and painted["renderer_texture_size"] == [1024, 1024], \
        "baked at twice the texture asked for: the pipeline saves it at half"
    loaded = served.calls("hy3dpaint.multiviewDiffusionNet")[-1]
    paint_dir = served.checkout / "hy3dpaint"
    assert loaded["multiview_cfg_path"] == str(paint_dir / "cfgs" / "hunyuan-paint-pbr.yaml")
    assert loaded["custom_pipeline"] == str(paint_dir / "hunyuanpaintpbr")
    assert loaded["multiview_pretrained_path"] == "tencent/Hunyuan3D-2.1"
    assert loaded["dino_ckpt_path"] == str(served.tmp / "dinov2") and loaded["device"] == "cpu"
    assert served.calls("hy3dpaint.torchvision_fix"), "the checkout's torchvision fix runs before the load"


def test_pbr_paint_of_a_given_mesh_takes_the_clients_knobs(served: Served) -> None:
    job = run_job(served, "/texture/generate", {
        "mesh": served.upload_mesh(), "images": [served.upload_image("paint21.png", colour=(20, 160, 60))],
        "model_preference": "hunyuan3d-2.1-paint", "quality": "high", "texture_resolution": 256,
        "parameters": {"max_num_view": 9, "remesh": False}})
    _, gltf = glb_of(served, job)
    pbr = gltf.materials[0].pbrMetallicRoughness
    assert np.abs(texture(gltf, pbr.baseColorTexture.index).reshape(-1, 3).mean(axis=0)
                  - (20, 160, 60)).max() < 12
    painted = served.calls("hy3dpaint.__call__")[-1]
    assert (painted["max_num_view"], painted["views"], painted["resolution"]) == (9, 9, 768)
    assert painted["use_remesh"] is False and painted["texture_size"] == 512

    job = run_job(served, "/texture/generate", {
        "mesh": served.upload_mesh(), "images": [served.upload_image("tiny21.png", size=13)],
        "model_preference": "hunyuan3d-2.1-paint"}, status="failed")
    assert job["error"]["code"] == "MODEL_ERROR"
    assert "TEST STAND-IN textureGenPipeline: failing as asked" in job["error"]["message"]


def mesh_faces(data: bytes) -> int:
    return len(trimesh.load(io.BytesIO(data), file_type="glb", force="mesh").faces)


# -- in-process: availability on this machine, GitHub main's API, progress, cancel, unload ----------------------------


def spec(model_id: str, feature: Feature, **options) -> ModelSpec:
    return ModelSpec(id=model_id, feature=feature, supported_inputs=frozenset({"mesh", "image", "multiview"}),
                     supported_outputs=("glb",), options=options)


def test_with_the_real_hy3dgen_installed_paint_is_unavailable_for_want_of_its_cuda_rasteriser(tmp_path: Path) -> None:
    """This machine has the real hy3dgen 2.0.2 (from PyPI) and no custom_rasterizer: loading would fail, so the
    model is listed unavailable with the command that builds it."""
    assert importlib.util.find_spec("custom_rasterizer_kernel") is None
    weights = hy3dgen_weights(tmp_path / "w")
    (reason,) = Hunyuan3DPaintModel.unavailable_reasons(spec("p", Feature.TEXTURE_GENERATION, weights=str(weights)))
    assert "custom_rasterizer_kernel" in reason and "hy3dgen/texgen/custom_rasterizer" in reason
    reasons = Hunyuan3DPaintModel.unavailable_reasons(spec("p", Feature.TEXTURE_GENERATION, weights=str(weights),
                                                           subfolder="hunyuan3d-paint-v2-0-turbo"))
    assert f"weights at {weights} lack hunyuan3d-paint-v2-0-turbo/model_index.json" in reasons


def test_hunyuan3d_21_availability_names_what_is_missing(tmp_path: Path) -> None:
    root = checkout_copy(tmp_path / "ckout", built=False)
    reasons = Hunyuan3D21PaintModel.unavailable_reasons(spec(
        "p", Feature.TEXTURE_GENERATION, source=str(root), weights=str(tmp_path), dino_weights=str(tmp_path / "no")))
    text = "\n".join(reasons)
    assert "options.weights must be a Hugging Face hub id" in text
    assert f"RealESRGAN weights not found at {root / 'hy3dpaint' / 'ckpt' / 'RealESRGAN_x4plus.pth'}" in text
    assert f"the mesh inpainter is not built in {root / 'hy3dpaint' / 'DifferentiableRenderer'}" in text
    assert f"DINOv2 weights not found at {tmp_path / 'no'}" in text
    # this machine has none of the paint's compiled or Blender parts
    for missing in ("custom_rasterizer_kernel", "'bpy'", "'realesrgan'"):
        assert missing in text, missing
    assert "'textureGenPipeline'" not in text, "found in the checkout's hy3dpaint folder"
    reasons = Hunyuan3D21ShapeModel.unavailable_reasons(spec("s", Feature.MESH_GENERATION, source=str(tmp_path),
                                                             weights=str(tmp_path)))
    assert reasons[0] == (f"{tmp_path} is not a checkout of https://github.com/Tencent-Hunyuan/Hunyuan3D-2.1: it "
                          "lacks hy3dshape/hy3dshape/pipelines.py")
    reasons = Hunyuan3D21ShapeModel.unavailable_reasons(spec("s", Feature.MESH_GENERATION, weights=str(tmp_path)))
    assert reasons[0].startswith("options.source is not set")


@pytest.fixture
def isolated_imports(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """sys.path and sys.modules as they were, after the test: the adapters put checkouts on the path."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    before = set(sys.modules)
    yield monkeypatch
    for name in set(sys.modules) - before:
        if name.split(".")[0] in {"hy3dshape", "textureGenPipeline", "torchvision_fix", "hy3dgen_texgen_standin"}:
            del sys.modules[name]


def standin_texgen(api: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The hy3dgen.texgen stand-in as ``hy3dgen.texgen`` of this process (the real hy3dgen stays importable)."""
    monkeypatch.setenv("POCKET3D_STANDIN_HY3DGEN_API", api)
    path = STANDINS / "hy3dgen" / "texgen" / "__init__.py"
    module_spec = importlib.util.spec_from_file_location("hy3dgen_texgen_standin", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    monkeypatch.setitem(sys.modules, "hy3dgen.texgen", module)


def test_github_main_api_several_images_progress_cancel_and_unload(tmp_path: Path,
                                                                   isolated_imports: pytest.MonkeyPatch) -> None:
    monkeypatch = isolated_imports
    calls_file = tmp_path / "calls.jsonl"
    monkeypatch.setenv(CALLS_ENV, str(calls_file))
    standin_texgen("main", monkeypatch)
    weights = hy3dgen_weights(tmp_path / "w")
    (weights / "hunyuan3d-paint-v2-0-turbo").mkdir()
    model = Hunyuan3DPaintModel(spec("p", Feature.TEXTURE_GENERATION, weights=str(weights), cpu_offload=True,
                                     subfolder="hunyuan3d-paint-v2-0-turbo"))
    model.load(CPU)
    assert calls(calls_file, "hy3dgen.texgen.from_pretrained") == [
        {"model_path": str(weights), "subfolder": "hunyuan3d-paint-v2-0-turbo", "api": "main"}]
    assert calls(calls_file, "hy3dgen.texgen.enable_model_cpu_offload") == [{"gpu_id": None, "device": "cuda"}]
    pipeline = model.pipeline
    originals = dict(pipeline.models)

    work = tmp_path / "work"
    work.mkdir()
    images = [disc_image(tmp_path / "a.png"), disc_image(tmp_path / "b.png", colour=(40, 40, 200))]
    inputs = RunInputs(work_dir=work, mesh=GOBLIN, images=images, quality="medium", texture_resolution=128)
    seen: list[tuple[float, str | None]] = []
    out = model.run(inputs, Hunyuan3DPaintModel.Params(max_faces=2000), lambda f, m: seen.append((f, m)))
    assert out["mesh"].is_file() and out["mesh"].parent == work
    (call,) = calls(calls_file, "hy3dgen.texgen.__call__")
    assert call["images"] == 2 and call["render_size"] == 2048 and call["texture_size"] == 128
    messages = [m for _, m in seen]
    stages = ["removing light and shadow", "multiview diffusion: 6 views", "baking 6 views", "inpainting"]
    positions = [next(i for i, m in enumerate(messages) if m.startswith(s)) for s in stages]
    assert positions == sorted(positions), messages
    assert "removing light and shadow from the image (2)" in messages, "one delight per reference image"
    fractions = [f for f, _ in seen]
    assert fractions == sorted(fractions) and fractions[-1] < 1
    assert pipeline.models == originals and "bake_from_multiview" not in vars(pipeline), "hooks removed"

    def cancel_at_diffusion(fraction: float, message: str | None) -> None:
        if message and message.startswith("multiview diffusion"):
            raise StageCancelled()

    with pytest.raises(StageCancelled):
        model.run(inputs, Hunyuan3DPaintModel.Params(max_faces=2000), cancel_at_diffusion)
    assert len(calls(calls_file, "hy3dgen.texgen.__call__")) == 1, "stopped before the model painted"
    assert pipeline.models == originals and "texture_inpaint" not in vars(pipeline)

    gone = weakref.ref(pipeline)
    del pipeline, originals
    model.unload()
    gc.collect()
    assert gone() is None, "unload drops every reference to the pipeline"
    assert model.pipeline is None and model.device is None


def test_pypi_api_refuses_a_subfolder_it_cannot_load(tmp_path: Path, isolated_imports: pytest.MonkeyPatch) -> None:
    standin_texgen("2.0.2", isolated_imports)
    model = Hunyuan3DPaintModel(spec("p", Feature.TEXTURE_GENERATION, weights=str(hy3dgen_weights(tmp_path / "w")),
                                     subfolder="hunyuan3d-paint-v2-0-turbo"))
    with pytest.raises(RuntimeError, match="needs hy3dgen from Hunyuan3D-2's GitHub repository"):
        model.load(CPU)
    assert model.pipeline is None
    with pytest.raises(InputRejected, match="needs a mesh"):
        model.run(RunInputs(work_dir=tmp_path, images=[GOBLIN]), model.Params(), lambda f, m: None)


def test_hunyuan3d_21_models_unload(tmp_path: Path, isolated_imports: pytest.MonkeyPatch) -> None:
    isolated_imports.setenv(CALLS_ENV, str(tmp_path / "calls.jsonl"))
    root = checkout_copy(tmp_path / "ckout")
    for model in (
        Hunyuan3D21ShapeModel(spec("s", Feature.MESH_GENERATION, source=str(root),
                                   weights=str(shape21_weights(tmp_path / "w")))),
        Hunyuan3D21PaintModel(spec("p", Feature.TEXTURE_GENERATION, source=str(root))),
    ):
        assert str(root / model.tree) in sys.path
        model.load(CPU)
        gone = weakref.ref(model.pipeline)
        model.unload()
        gc.collect()
        assert gone() is None, type(model).__name__


def test_the_hy3dgen_stand_in_joins_the_real_package(tmp_path: Path) -> None:
    """On the servers' path, hy3dgen.texgen is the stand-in while the shape code stays the real hy3dgen."""
    probe = ("import importlib.util as u; print(u.find_spec('hy3dgen.texgen').origin); "
             "print(u.find_spec('hy3dgen.shapegen').origin)")
    env = {**os.environ, **standin_env()}
    env["PYTHONPATH"] = f"{STANDINS}:{env['PYTHONPATH']}"
    run = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=60,
                         check=True)
    texgen, shapegen = run.stdout.split()
    assert Path(texgen) == STANDINS / "hy3dgen" / "texgen" / "__init__.py"
    real = importlib.util.find_spec("hy3dgen.shapegen")
    assert real is not None and Path(shapegen) == Path(real.origin) and STANDINS not in Path(shapegen).parents
