"""pocket3d.geometry on its own: formats, validation limits, decimation, previews, on the shared test meshes."""

from __future__ import annotations

import json
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest
import trimesh
from client_helpers import MESHES, VALIDATOR, assert_valid_gltf, is_closed, read_fbx
from PIL import Image

from pocket3d import geometry
from pocket3d.errors import ErrorCode

GOBLIN = MESHES / "typical_humanoid_goblin.obj"


def test_every_exportable_format_round_trips(tmp_path) -> None:
    scene = geometry.load_scene(GOBLIN, "obj")
    faces = sum(len(g.faces) for g in scene.geometry.values())
    for name, fmt in geometry.FORMATS.items():
        if fmt.exporter is None:
            assert name in geometry.unavailable_formats()
            continue
        dest = tmp_path / f"model{fmt.suffix}"
        geometry.export_scene(scene, name, dest)
        assert geometry.format_of(dest) is fmt
        if name == "obj":
            with zipfile.ZipFile(dest) as z:
                z.extractall(tmp_path / "obj")
            back = geometry.load_scene(tmp_path / "obj" / "model.obj", "obj")
        elif name == "json":
            body = json.loads(dest.read_text())
            back = trimesh.Scene(trimesh.Trimesh(body["vertices"], body["faces"], process=False))
        elif name == "fbx":  # read back by Blender, the only FBX reader here
            assert sum(m["polygons"] for m in read_fbx(dest)["meshes"]) == faces
            continue
        elif name == "usdz":
            assert usd_faces_and_errors(dest) == (faces, [])
            with zipfile.ZipFile(dest) as z:
                assert any(n.endswith(".png") for n in z.namelist()), "the texture is packaged"
            continue
        else:
            back = geometry.load_scene(dest, name)
        assert sum(len(g.faces) for g in back.geometry.values()) == faces, name
        if name == "glb":
            assert_valid_gltf(dest.read_bytes(), tmp_path)


def usd_faces_and_errors(path: Path) -> tuple[int, list[str]]:
    """Faces in a USD(Z) file, and what USD's own validators (all registered ones) find wrong with it."""
    from pxr import Usd, UsdGeom, UsdValidation

    stage = Usd.Stage.Open(str(path))
    faces = sum(len(UsdGeom.Mesh(p).GetFaceVertexCountsAttr().Get()) for p in stage.Traverse() if p.IsA(UsdGeom.Mesh))
    context = UsdValidation.ValidationContext(UsdValidation.ValidationRegistry().GetOrLoadAllValidators())
    return faces, [e.GetMessage() for e in context.Validate(stage)]


def test_usdz_keeps_vertex_colours(tmp_path) -> None:
    from pxr import Usd, UsdGeom

    mesh = trimesh.creation.icosphere()
    mesh.visual.vertex_colors = np.tile([200, 30, 30, 255], (len(mesh.vertices), 1))
    dest = tmp_path / "ball.usdz"
    geometry.export_scene(trimesh.Scene(mesh), "usdz", dest)
    assert usd_faces_and_errors(dest) == (len(mesh.faces), [])
    stage = Usd.Stage.Open(str(dest))  # held: prims expire with their stage
    prim = next(p for p in stage.Traverse() if p.IsA(UsdGeom.Mesh))
    colors = np.asarray(UsdGeom.PrimvarsAPI(prim).GetPrimvar("displayColor").Get())
    assert np.allclose(colors[0], [200 / 255, 30 / 255, 30 / 255], atol=1e-3)


@pytest.mark.parametrize("text,code", [
    (b"v 0 0 0\nv 1 0 0\nv 0 1 0\n", ErrorCode.INVALID_MESH),  # no faces
    (b"v nan 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n", ErrorCode.INVALID_MESH),
    (b"v 0 0 0\nv 1 0 0\nf 1 2 9\n", ErrorCode.INVALID_MESH),  # index out of range
])
def test_bad_meshes_are_refused_with_a_code(tmp_path, text: bytes, code) -> None:
    path = tmp_path / "bad.obj"
    path.write_bytes(text)
    with pytest.raises(geometry.MeshError) as e:
        geometry.load_scene(path, "obj")
    assert e.value.code == code


def test_limits(tmp_path) -> None:
    with pytest.raises(geometry.MeshError) as e:
        geometry.load_scene(GOBLIN, "obj", geometry.MeshLimits(max_faces=10_000))
    assert e.value.code == ErrorCode.MESH_TOO_LARGE and e.value.details["faces"] == 16358


@pytest.mark.parametrize("name", ["typical_humanoid_goblin", "typical_creature_elephant"])
def test_decimation_keeps_the_shape_closed_and_the_texture_in_place(name: str) -> None:
    mesh = trimesh.load(MESHES / f"{name}.obj", force="mesh", process=False)
    small = geometry.decimate_mesh(mesh, 5000)
    assert 4500 <= len(small.faces) <= 5000
    assert np.allclose(small.bounds, mesh.bounds, atol=0.02 * np.ptp(mesh.bounds, axis=0).max())
    assert is_closed(mesh) and is_closed(small), "no seam opened into a hole"
    uv = small.visual.uv[small.faces]
    edge = np.linalg.norm(uv - np.roll(uv, 1, axis=1), axis=2)
    # faces stay small in the texture, as on the input; a scrambled mapping stretches them across it
    assert np.median(edge) < 0.03 and (edge.max(axis=1) > 0.2).mean() < 0.05


def test_preview_draws_the_mesh(tmp_path) -> None:
    dest = tmp_path / "p.png"
    geometry.render_preview(geometry.load_scene(GOBLIN, "obj"), dest)
    alpha = np.asarray(Image.open(dest))[:, :, 3]
    covered = (alpha > 0).mean()
    assert 0.1 < covered < 0.9, covered


def test_the_validator_catches_a_broken_glb(tmp_path) -> None:
    """The check the API tests rely on can fail: a GLB whose index points past its vertices has errors."""
    if not (VALIDATOR / "node_modules").is_dir():
        pytest.skip("validator not installed")
    mesh = trimesh.Trimesh([[0, 0, 0], [1, 0, 0], [0, 1, 0]], [[0, 1, 2]], process=False)
    data = bytearray(mesh.export(file_type="glb"))
    bad = tmp_path / "bad.glb"
    bad.write_bytes(bytes(data).replace(b'"count":3', b'"count":9', 1))
    run = subprocess.run(["node", str(VALIDATOR / "validate.mjs"), str(bad)], capture_output=True, text=True)
    assert run.returncode == 1 and json.loads(run.stdout)["numErrors"] > 0
