"""Files meant to hurt the server (issue 11): each is answered with a clear 4xx, or finished, within seconds and
with bounded memory. Blender's children are watched: past a few GB the server's process group is killed, so a
regression fails here instead of taking the machine down."""

from __future__ import annotations

import concurrent.futures
import os
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import trimesh
from client_helpers import submit, wait_final
from hostile_files import (
    ascii_fbx,
    garbage_binary_fbx,
    gltf_naming_another_file,
    instanced_glb,
    many_nodes_glb,
    material_groups_obj,
    only_zero_area_faces_obj,
    overflow_cube_obj,
    polygon_obj,
    primitives_gltf,
    scaled_by_node_glb,
    single_triangle_obj,
    slivers_obj,
    sparse_accessor_gltf,
    textured_glb,
    with_zero_area_faces_obj,
)
from server import ServerProcess
from watchdog import ChildWatch, TreeWatch

from pocket3d import geometry
from pocket3d.geometry.formats import fbx

BLENDER = "_blender_fbx_script"
WATCHDOG_MB = 3072  # well above what a small FBX needs, well below what takes a CI machine down

BUILTINS_YAML = """
models:
  texture_generation:
    builtin_projection_paint:
      class: "pocket3d.models.builtin.texturing:ProjectionTextureModel"
      supported_inputs: ["mesh", "text", "image", "multiview"]
      supported_outputs: ["glb"]
  segmentation:
    builtin_segmentation:
      class: "pocket3d.models.builtin.segmentation:GeometricSegmentationModel"
      supported_inputs: ["mesh"]
      supported_outputs: ["glb"]
  auto_rigging:
    builtin_rigging:
      class: "pocket3d.models.builtin.rigging:GeometricRiggingModel"
      supported_inputs: ["mesh"]
      supported_outputs: ["glb"]
  mesh_generation:
    builtin_silhouette:
      class: "pocket3d.models.builtin.image_to_mesh:SilhouetteInflationModel"
      supported_inputs: ["image"]
      supported_outputs: ["glb"]
"""


@pytest.fixture(scope="module")
def hostile_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """The built-in models, two Blender processes at most, a one-second wait for one, 2 GB of address space each."""
    root = tmp_path_factory.mktemp("hostile")
    models = root / "models.yaml"
    models.write_text(BUILTINS_YAML)
    proc = ServerProcess(root / "data", models=models, own_group=True,
                         env={"POCKET3D_BPY_PROCESSES": "2", "POCKET3D_BPY_WAIT": "1",
                              "POCKET3D_BPY_MEMORY_MB": "2048"}).start()
    yield proc
    proc.kill_group()


@pytest.fixture
def c(hostile_server: ServerProcess) -> Iterator[httpx.Client]:
    with hostile_server.client() as client:
        yield client


def _upload(c: httpx.Client, data: bytes, name: str) -> httpx.Response:
    return c.post("/files", files={"file": (name, data, "application/octet-stream")})


def _watch(server: ServerProcess) -> ChildWatch:
    return ChildWatch(server.proc.pid, BLENDER, WATCHDOG_MB, server.kill_group)


def _needs_blender() -> None:
    if fbx.unavailable_reason():
        if os.environ.get("CI"):
            raise AssertionError("the bpy environment is missing: run `make venv-bpy`")
        pytest.skip("the bpy environment is missing (make venv-bpy)")


# -- FBX --------------------------------------------------------------------------------------------------------

def test_garbage_binary_fbx_is_refused_in_seconds_with_bounded_memory(hostile_server, c) -> None:
    _needs_blender()
    with _watch(hostile_server) as watch:
        started = time.monotonic()
        r = _upload(c, garbage_binary_fbx(), "g.fbx")
        took = time.monotonic() - started
    assert not watch.killed, f"a Blender child passed {WATCHDOG_MB} MB"
    assert r.status_code == 422, r.text
    assert r.json()["error_code"] == "INVALID_MESH"
    assert "malformed" in r.json()["message"]
    assert took < 5
    assert watch.peak_rss_mb < 1024


def test_blender_itself_is_held_to_its_address_space_limit(tmp_path, monkeypatch) -> None:
    """Behind the structural check, the limit: the same garbage handed to Blender directly fails in seconds
    instead of growing without bound."""
    _needs_blender()
    monkeypatch.setenv("POCKET3D_BPY_MEMORY_MB", "1536")
    src = tmp_path / "g.fbx"
    src.write_bytes(garbage_binary_fbx())
    killed = []
    with ChildWatch(os.getpid(), BLENDER, WATCHDOG_MB, lambda: killed.append(True)) as watch:
        started = time.monotonic()
        with pytest.raises(geometry.MeshError) as refused:
            fbx._blender_convert(src, tmp_path / "out.glb", importing=True)
        took = time.monotonic() - started
    assert not killed and watch.seen, "Blender ran, and stayed under the watchdog"
    assert refused.value.code == "INVALID_MESH"
    assert took < 30
    assert watch.peak_rss_mb < 1536


def test_ascii_fbx_is_refused_without_starting_blender(hostile_server, c) -> None:
    with _watch(hostile_server) as watch:
        r = _upload(c, ascii_fbx(), "a.fbx")
    assert r.status_code == 415, r.text
    assert "binary FBX" in r.json()["message"]
    assert not watch.seen


def test_concurrent_fbx_uploads_share_a_small_pool(hostile_server, c, tmp_path) -> None:
    """Eight uploads at once: never more than two Blender processes; each answer is the file, or 503 SERVER_BUSY
    with Retry-After once the one-second wait is up."""
    _needs_blender()
    model = tmp_path / "ball.fbx"
    geometry.export_scene(trimesh.Scene(trimesh.creation.icosphere(2)), "fbx", model)
    data = model.read_bytes()
    with _watch(hostile_server) as watch, concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda i: _upload(c, data, f"ball{i}.fbx"), range(8)))
    assert not watch.killed
    assert watch.most_at_once <= 2, watch.most_at_once
    tmp = (hostile_server.data_dir / "tmp").resolve()
    complete = [command for command in watch.command_lines if "--" in command]  # not one read mid-exec
    assert complete
    for command in complete:  # Blender's work files are under the data directory's tmp/
        source = Path(command[command.index("--") + 1])
        assert source.is_relative_to(tmp), command
    codes = sorted(r.status_code for r in answers)
    assert 201 in codes and set(codes) <= {201, 503}, [r.text for r in answers]
    for r in answers:
        if r.status_code == 503:
            assert r.json()["error_code"] == "SERVER_BUSY"
            assert int(r.headers["Retry-After"]) >= 1


# -- meshes that are larger, or stranger, than they look ------------------------------------------------------

@pytest.mark.parametrize(("name", "make", "status", "code"), [
    ("instanced.glb", instanced_glb, 413, "MESH_TOO_LARGE"),
    ("nodes.glb", lambda: many_nodes_glb(12_000), 413, "MESH_TOO_LARGE"),
    ("overflow.obj", overflow_cube_obj, 422, "INVALID_MESH"),
    ("scaled.glb", scaled_by_node_glb, 422, "INVALID_MESH"),
    ("flat.obj", only_zero_area_faces_obj, 422, "INVALID_MESH"),
    ("other.gltf", gltf_naming_another_file, 422, "INVALID_MESH"),
    ("sparse.gltf", sparse_accessor_gltf, 413, "MESH_TOO_LARGE"),
    ("primitives.gltf", primitives_gltf, 413, "MESH_TOO_LARGE"),
    ("materials.obj", material_groups_obj, 413, "MESH_TOO_LARGE"),
    ("texture.glb", textured_glb, 413, "MESH_TOO_LARGE"),
])
def test_meshes_larger_or_stranger_than_they_look_are_refused_at_upload(hostile_server, c, name, make, status,
                                                                        code) -> None:
    """Refused from what the file declares, in seconds and without the server (which reads uploads itself)
    growing: past 2 GB the watchdog kills it."""
    data = make()
    assert len(data) < 500_000  # small files, all of them
    with TreeWatch(hostile_server.proc.pid, 2048, hostile_server.kill_group) as watch:
        started = time.monotonic()
        r = _upload(c, data, name)
        took = time.monotonic() - started
    assert not watch.killed, "the server grew past 2 GB reading a small file"
    assert r.status_code == status, r.text
    assert r.json()["error_code"] == code
    assert took < 10
    assert watch.peak_growth_mb < 300, f"the server grew {watch.peak_growth_mb:.0f} MB"


def test_a_large_texture_is_named_with_what_to_do(c) -> None:
    body = _upload(c, textured_glb(), "texture.glb").json()
    assert body["details"]["texture_pixels"] == 13_000 ** 2
    assert "13000x13000" in body["message"] and "downscale" in body["hint"]
    assert _upload(c, textured_glb(1024), "small-texture.glb").status_code == 201


def test_instanced_faces_are_counted_and_said(c) -> None:
    body = _upload(c, instanced_glb(), "instanced.glb").json()
    assert body["details"]["faces"] == 6_000_000 and body["details"]["instances"] == 300
    assert "placed 300 times" in body["message"]


@pytest.mark.parametrize("route", ["/texture/generate", "/segment", "/rig"])
def test_a_5000_sided_polygon_finishes_in_seconds(c, route) -> None:
    file_id = _upload(c, polygon_obj(5000), "ngon.obj").json()["file_id"]
    body = {"mesh": file_id, "output_format": "glb"}
    if route == "/texture/generate":
        body.update(text_prompt="a red wooden plate", texture_resolution=512)
    started = time.monotonic()
    job = wait_final(c, submit(c, route, body)["job_id"], timeout=120)
    assert job["status"] in ("succeeded", "failed"), job
    if job["status"] == "failed":
        assert job["error"]["code"] == "INVALID_INPUT", job["error"]
    assert time.monotonic() - started < 60


@pytest.mark.parametrize(("name", "make"), [("slivers.obj", slivers_obj), ("triangle.obj", single_triangle_obj),
                                            ("zero-area.obj", with_zero_area_faces_obj)])
def test_degenerate_but_valid_meshes_are_textured(c, name, make) -> None:
    file_id = _upload(c, make(), name).json()["file_id"]
    job = wait_final(c, submit(c, "/texture/generate", {
        "mesh": file_id, "text_prompt": "a blue plank", "texture_resolution": 256,
        "parameters": {"unwrap_timeout": 3}})["job_id"], timeout=90)
    assert job["status"] == "succeeded", job["error"]
