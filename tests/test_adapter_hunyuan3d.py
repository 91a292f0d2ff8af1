"""Hunyuan3D-2's real shape pipeline (hy3dgen 2.0.2), rembg and a diffusers text-to-image pipeline, for real on
the CPU, through pocket3d's HTTP API, composed into the pipelines a client asks for:

- image -> mesh: remove_background (rembg) -> generate_mesh (Hunyuan3D-2) -> paint_texture -> export;
- text -> mesh: text_to_image (diffusers) -> remove_background -> generate_mesh -> paint_texture -> export.

Only the weights are doubles (no hub here): tiny random ones the tests build in the real layouts
(tests/support/tiny_hunyuan3d.py, tiny_diffusers.py, tiny_rembg.py). The painter is pocket3d's built-in
projection model, as the real Hunyuan3D paint pipeline needs CUDA.
"""

from __future__ import annotations

import gc
import io
import subprocess
import sys
import weakref
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pygltflib
import pytest
import trimesh
from adapter_harness import standin_env, write_models
from client_helpers import IMAGES, assert_valid_gltf, submit, upload, wait_final
from PIL import Image
from server import ServerProcess

pytest.importorskip("hy3dgen", reason="the hunyuan3d extra is not installed (make test installs it)")

FAST = "{steps: 3, octree_resolution: 32, num_chunks: 4000, max_faces: 5000}"


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    import sys

    import tiny_diffusers
    import tiny_hunyuan3d
    import tiny_rembg
    from adapter_harness import TORCHVISION_STANDIN, torchvision_missing

    if torchvision_missing():
        sys.path.insert(0, str(TORCHVISION_STANDIN))  # hy3dgen imports torchvision; building needs its classes
    root = tmp_path_factory.mktemp("weights")
    return {"hunyuan": tiny_hunyuan3d.build(root / "hunyuan3d-2"), "sd": tiny_diffusers.build(root / "tiny-sd"),
            "u2net": tiny_rembg.build(root / "u2net")}


def registry(weights: dict[str, Path], hunyuan_weights: Path | None = None) -> str:
    return f"""
entry_points: false  # only the models listed here, not the installed built-ins
models:
  mesh_generation:
    hunyuan3d-2:
      class: "pocket3d.models.adapters.hunyuan3d:Hunyuan3DShapeModel"
      supported_inputs: ["image"]
      supported_outputs: ["glb", "obj"]
      max_concurrent: 2  # the adapter must still run one call at a time (MODEL-FACTS.md)
      textured: false
      cutout: true
      paint_with: builtin_projection_paint
      options:
        weights: {hunyuan_weights or weights["hunyuan"]}
        presets: {{low: {FAST}, medium: {FAST}, high: {FAST}}}
    hunyuan3d-2-hub:
      class: "pocket3d.models.adapters.hunyuan3d:Hunyuan3DShapeModel"
      supported_inputs: ["image"]
      supported_outputs: ["glb"]
      devices: ["cuda"]
      textured: false
      options: {{weights: "tencent/Hunyuan3D-2"}}
  texture_generation:
    builtin_projection_paint:
      class: "pocket3d.models.builtin.texturing:ProjectionTextureModel"
      supported_inputs: ["mesh", "text", "image", "multiview"]
      supported_outputs: ["glb"]
  text_to_image:
    tiny-sd:
      class: "pocket3d.models.adapters.text_to_image:DiffusersTextToImageModel"
      supported_inputs: ["text"]
      supported_outputs: ["png"]
      options:
        weights: {weights["sd"]}
        presets: {{low: {{steps: 2, size: 64}}, medium: {{steps: 2, size: 64}}, high: {{steps: 3, size: 64}}}}
  background_removal:
    rembg:
      class: "pocket3d.models.adapters.rembg:RembgModel"
      supported_inputs: ["image", "multiview"]
      supported_outputs: ["png"]
      options: {{weights: {weights["u2net"]}}}
"""


@pytest.fixture(scope="module")
def server(weights: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    data = tmp_path_factory.mktemp("hunyuan-server")
    proc = ServerProcess(data / "data", models=write_models(data, registry(weights)),
                         env=standin_env(standins=False, MODEL_CHECKSUM_DISABLED="1")).start(timeout=60)
    yield proc
    proc.stop()


@pytest.fixture
def client(server: ServerProcess) -> Iterator[httpx.Client]:
    with server.client() as c:
        c.timeout = 120
        yield c


def _on_white(path: Path, dest: Path) -> Path:
    """The shared RGBA image flattened on white, as a photo would come: rembg has to find the object."""
    src = Image.open(path).convert("RGBA")
    flat = Image.new("RGBA", src.size, (255, 255, 255, 255))
    flat.alpha_composite(src)
    flat.convert("RGB").save(dest)
    return dest


def _download(client: httpx.Client, job: dict, name: str) -> bytes:
    output = next((o for o in job["outputs"] if o["name"] == name), None)
    assert output is not None, f"no output {name!r} in {[o['name'] for o in job['outputs']]}"
    r = client.get(output["url"].removeprefix("/api/v1"))
    assert r.status_code == 200
    return r.content


def _mesh(data: bytes) -> trimesh.Trimesh:
    scene = trimesh.load(io.BytesIO(data), file_type="glb")
    return trimesh.util.concatenate(list(scene.geometry.values()))


def _check_textured_glb(data: bytes, tmp_path: Path) -> trimesh.Trimesh:
    assert assert_valid_gltf(data, tmp_path)["numErrors"] == 0
    gltf = pygltflib.GLTF2.load_from_bytes(data)
    assert gltf.textures and gltf.images, "the paint stage gave the shape a texture"
    mesh = _mesh(data)
    assert len(mesh.faces) > 100
    return mesh


def test_image_to_mesh_runs_rembg_then_hunyuan3d_then_paint(client: httpx.Client, tmp_path: Path) -> None:
    src = IMAGES / "typical_creature_elephant.png"
    photo = upload(client, _on_white(src, tmp_path / "elephant.png"))
    job = wait_final(client, submit(client, "/mesh/generate", {"images": [photo["file_id"]], "seed": 3})["job_id"],
                     timeout=180)
    assert job["status"] == "succeeded", job.get("error")
    assert job["model"] == "hunyuan3d-2"
    assert [(s["name"], s["model"]) for s in job["stages"]] == [
        ("remove_background", "rembg"), ("generate_mesh", "hunyuan3d-2"),
        ("paint_texture", "builtin_projection_paint"), ("export", None)]
    cutout = Image.open(io.BytesIO(_download(client, job, "remove_background.png")))
    assert cutout.mode == "RGBA"
    found = np.asarray(cutout.getchannel("A")) > 128
    truth = np.asarray(Image.open(src).getchannel("A")) > 0
    assert (found & truth).sum() / (found | truth).sum() > 0.5, "rembg cut the elephant out of the white"
    _check_textured_glb(_download(client, job, "model.glb"), tmp_path)


def test_text_to_mesh_draws_the_prompt_first(client: httpx.Client, tmp_path: Path) -> None:
    job = wait_final(client, submit(client, "/mesh/generate", {
        "text_prompt": "a wooden chair", "model_preference": "hunyuan3d-2", "seed": 1})["job_id"], timeout=180)
    assert job["status"] == "succeeded", job.get("error")
    assert [s["name"] for s in job["stages"]] == [
        "text_to_image", "remove_background", "generate_mesh", "paint_texture", "export"]
    assert job["stages"][0]["model"] == "tiny-sd"
    view = Image.open(io.BytesIO(_download(client, job, "text_to_image.png")))
    assert view.size == (64, 64), "the preset's size reached the diffusers pipeline"
    assert Image.open(io.BytesIO(_download(client, job, "remove_background.png"))).mode == "RGBA"
    _check_textured_glb(_download(client, job, "model.glb"), tmp_path)


def test_same_seed_same_shape_even_when_submitted_together(client: httpx.Client, tmp_path: Path) -> None:
    """Upstream's server shares one pipeline between threads and returned other meshes for the same seed; the
    adapter runs one call at a time although models.yaml lets the worker start two."""
    image = upload(client, IMAGES / "typical_misc_crate.png")["file_id"]
    body = {"images": [image], "seed": 7, "quality": "low", "parameters": {"remove_floaters": False}}
    ids = [submit(client, "/mesh/generate", body)["job_id"] for _ in range(3)]
    jobs = [wait_final(client, job_id, timeout=240) for job_id in ids]
    assert all(j["status"] == "succeeded" for j in jobs), jobs
    meshes = [_mesh(_download(client, j, "model.glb")) for j in jobs]
    for other in meshes[1:]:
        assert other.vertices.shape == meshes[0].vertices.shape
        assert np.allclose(other.vertices, meshes[0].vertices, atol=1e-5)


def test_parameters_reach_the_pipeline_or_are_refused(client: httpx.Client) -> None:
    faces = {}
    for max_faces in (300, 5000):
        image = upload(client, IMAGES / "typical_misc_crate.png")["file_id"]  # an upload serves one job
        job = wait_final(client, submit(client, "/mesh/generate", {
            "images": [image], "seed": 2, "parameters": {"octree_resolution": 24, "max_faces": max_faces}})["job_id"],
            timeout=180)
        assert job["status"] == "succeeded", job.get("error")
        faces[max_faces] = len(_mesh(_download(client, job, "model.glb")).faces)
    assert faces[300] < faces[5000], f"max_faces reached hy3dgen's FaceReducer: {faces}"
    image = upload(client, IMAGES / "typical_misc_crate.png")["file_id"]
    r = client.post("/mesh/generate", json={"images": [image], "parameters": {"octree_resolution": 8}})
    assert r.status_code == 422 and r.json()["error_code"] == "INVALID_PARAMETERS"
    r = client.post("/mesh/generate", json={"images": [image], "parameters": {"views": ["top"]}})
    assert r.status_code == 422 and "views" in r.json()["message"]


def test_weights_on_the_hub_while_offline_are_an_unavailable_reason(client: httpx.Client) -> None:
    models = {m["id"]: m for m in client.get("/system/models").json()["models"]}
    assert models["hunyuan3d-2"]["available"], models["hunyuan3d-2"]
    hub = models["hunyuan3d-2-hub"]
    assert not hub["available"]
    reasons = " ".join(hub["unavailable_reasons"])
    assert "tencent/Hunyuan3D-2" in reasons and "HF_HUB_OFFLINE" in reasons
    assert "no cuda device" in reasons
    image = upload(client, IMAGES / "typical_misc_crate.png")["file_id"]
    r = client.post("/mesh/generate", json={"images": [image], "model_preference": "hunyuan3d-2-hub"})
    assert r.status_code == 503 and r.json()["error_code"] == "MODEL_UNAVAILABLE"


def test_missing_weights_folder(weights: dict[str, Path], tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    proc = ServerProcess(tmp_path / "data", models=write_models(tmp_path, registry(weights, missing)),
                         env=standin_env(standins=False)).start(timeout=60)
    try:
        with proc.client() as c:
            m = next(m for m in c.get("/system/models").json()["models"] if m["id"] == "hunyuan3d-2")
            assert not m["available"] and f"weights not found at {missing}" in m["unavailable_reasons"]
            image = upload(c, IMAGES / "typical_misc_crate.png")["file_id"]
            r = c.post("/mesh/generate", json={"images": [image], "model_preference": "hunyuan3d-2"})
            assert r.status_code == 503 and r.json()["error_code"] == "MODEL_UNAVAILABLE"
            assert str(missing) in r.json()["message"]
    finally:
        proc.stop()


def test_unload_lets_the_pipeline_go(weights: dict[str, Path], tmp_path: Path) -> None:
    import sys

    from adapter_harness import TORCHVISION_STANDIN, torchvision_missing

    from pocket3d.models.adapters.hunyuan3d import Hunyuan3DShapeModel, Hunyuan3DShapeParams
    from pocket3d.models.spec import Device, Feature, ModelSpec, RunInputs

    if torchvision_missing() and str(TORCHVISION_STANDIN) not in sys.path:
        sys.path.insert(0, str(TORCHVISION_STANDIN))
    spec = ModelSpec("hunyuan3d-2", Feature.MESH_GENERATION, frozenset({"image"}), ("glb",),
                     options={"weights": str(weights["hunyuan"]),
                              "presets": {"medium": {"steps": 2, "octree_resolution": 24, "num_chunks": 4000,
                                                     "max_faces": 2000}}})
    adapter = Hunyuan3DShapeModel(spec)
    adapter.load(Device("cpu", "cpu", "CPU", 1024))
    pipeline = weakref.ref(adapter.pipeline)
    steps: list[str | None] = []
    out = adapter.run(RunInputs(work_dir=tmp_path, images=[IMAGES / "typical_misc_crate.png"], seed=0),
                      Hunyuan3DShapeParams(), lambda f, m=None: steps.append(m))
    assert len(trimesh.load(out["mesh"], force="mesh").faces) > 0
    assert "sampling: step 2/2" in steps, "progress is reported per diffusion step"
    adapter.unload()
    gc.collect()
    assert pipeline() is None, "unload dropped every reference to the pipeline"


def test_validate_models_script_runs_an_available_model_and_reports_its_peak(server: ServerProcess) -> None:
    """scripts/validate_models.py, meant for GPU machines, against this server: a row per model with the
    scheduler's measured times and peak memory."""
    from server import ROOT

    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "validate_models.py"), "--url", server.url,
                           "--only", "hunyuan3d-2", "--quality", "low"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr + done.stdout
    row = next(line for line in done.stdout.splitlines() if line.startswith("| hunyuan3d-2 |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[2] == "succeeded"
    assert float(cells[6]) > 0, "the worker's measured peak reached /system/models"
    assert "remove_background(rembg) > generate_mesh(hunyuan3d-2) > paint_texture" in cells[7]
