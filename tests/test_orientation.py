"""Which way is up (pocket3d.geometry.orientation), each export format's own convention, and previews that stand up
and fit: on the shared meshes, which are Z-up, and on synthetic shapes."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest
import trimesh
from client_helpers import MESHES, read_fbx, stood_up
from PIL import Image

from pocket3d import geometry
from pocket3d.geometry.orientation import TO_Y_UP, orientation_of, turned

SHARED_MESHES = ["typical_humanoid_goblin.obj", "typical_creature_elephant.obj", "typical_creature_robot_dinosour.obj"]
GOBLIN = MESHES / "typical_humanoid_goblin.obj"


def tallest(vertices: np.ndarray) -> int:
    return int(np.argmax(np.ptp(np.asarray(vertices), axis=0)))


@pytest.mark.parametrize("name", SHARED_MESHES)
def test_the_shared_meshes_read_z_up_and_stood_up_they_read_y_up(name: str) -> None:
    scene = geometry.load_scene(MESHES / name, "obj")
    found = orientation_of(scene, "obj")
    assert (found.up, found.source) == ("z", "shape"), found.scores
    assert found.scores["z"] > 5 * found.scores["y"], "not a close call"
    record = found.as_dict()
    assert record["applied_rotation"]["axis"] == "x" and record["applied_rotation"]["degrees"] == -90
    upright = turned(scene, found.rotation)
    assert orientation_of(upright, "obj").up == "y"
    for fmt in ("ply", "stl"):  # whatever the format's habit, the shape decides when it clearly can
        assert orientation_of(upright, fmt).up == "y" and orientation_of(scene, fmt).up == "z"


def test_the_format_says_the_parameter_wins_and_a_shape_that_cannot_tell_follows_the_formats_habit() -> None:
    scene = geometry.load_scene(GOBLIN, "obj")
    assert orientation_of(scene, "glb").as_dict() == {"detected": "y", "source": "format", "applied_rotation": None}
    assert orientation_of(scene, "fbx").up == "y"
    assert (orientation_of(scene, "obj", "y").up, orientation_of(scene, "obj", "y").source) == ("y", "parameter")
    assert orientation_of(trimesh.Scene(trimesh.creation.icosphere()), "glb", "z").up == "z"
    cube = trimesh.Scene(trimesh.creation.box())  # the same from every side
    assert (orientation_of(cube, "obj").up, orientation_of(cube, "obj").source) == ("y", "convention")
    assert (orientation_of(cube, "stl").up, orientation_of(cube, "ply").up) == ("z", "z")


def test_turning_keeps_the_faces_in_order_and_the_uvs_and_brings_the_front_to_plus_z() -> None:
    scene = geometry.load_scene(GOBLIN, "obj")
    (source,) = scene.geometry.values()
    (upright,) = turned(scene, TO_Y_UP["z"]).geometry.values()
    np.testing.assert_array_equal(upright.faces, source.faces)
    np.testing.assert_allclose(upright.visual.uv, source.visual.uv)
    np.testing.assert_allclose(upright.vertices, source.vertices @ TO_Y_UP["z"].T, atol=1e-9)
    assert tallest(upright.vertices) == 1
    # (x, y, z) -> (x, z, -y): up goes up, and a Z-up model's front (-Y, Blender's) becomes glTF's front, +Z
    np.testing.assert_allclose(TO_Y_UP["z"] @ [0, 0, 1], [0, 1, 0])
    np.testing.assert_allclose(TO_Y_UP["z"] @ [0, -1, 0], [0, 0, 1])


@pytest.fixture(scope="module")
def upright_scene() -> trimesh.Scene:
    """The goblin as every mesh pocket3d holds: Y-up, +Z forward."""
    return trimesh.Scene(stood_up(trimesh.load(GOBLIN, force="mesh", process=False)))


def test_glb_and_obj_are_written_y_up_stl_and_ply_z_up(upright_scene: trimesh.Scene, tmp_path: Path) -> None:
    for name, up in (("glb", 1), ("obj", 1), ("stl", 2), ("ply", 2)):
        dest = tmp_path / f"model{geometry.FORMATS[name].suffix}"
        geometry.export_scene(upright_scene, name, dest)
        if name == "obj":
            with zipfile.ZipFile(dest) as z:
                z.extractall(tmp_path / "obj")
            dest = tmp_path / "obj" / "model.obj"
        back = trimesh.util.concatenate(list(geometry.load_scene(dest, name).dump()))
        assert tallest(back.vertices) == up, name
    # Z-up, -Y forward: the front (+Z in glTF) is -Y in the STL; the head is at the top
    stl = trimesh.load(tmp_path / "model.stl", force="mesh")
    np.testing.assert_allclose(stl.bounds[:, 2], upright_scene.bounds[:, 1], atol=1e-5)
    np.testing.assert_allclose(stl.bounds[:, 1], -upright_scene.bounds[::-1, 2], atol=1e-5)


def test_usdz_declares_y_up_and_metres(upright_scene: trimesh.Scene, tmp_path: Path) -> None:
    from pxr import Usd, UsdGeom

    dest = tmp_path / "model.usdz"
    geometry.export_scene(upright_scene, "usdz", dest)
    stage = Usd.Stage.Open(str(dest))
    assert UsdGeom.GetStageUpAxis(stage) == UsdGeom.Tokens.y
    assert UsdGeom.GetStageMetersPerUnit(stage) == 1.0
    (mesh,) = [UsdGeom.Mesh(p) for p in stage.Traverse() if p.IsA(UsdGeom.Mesh)]
    points = np.asarray(mesh.GetPointsAttr().Get())
    assert tallest(points) == 1
    np.testing.assert_allclose(points.max(axis=0), upright_scene.bounds[1], atol=1e-5)


def test_fbx_declares_y_up_and_stands_in_blender(upright_scene: trimesh.Scene, tmp_path: Path) -> None:
    dest = tmp_path / "model.fbx"
    geometry.export_scene(upright_scene, "fbx", dest)
    found = read_fbx(dest)
    axes = found["axes"]
    assert (axes["UpAxis"], axes["UpAxisSign"]) == (1, 1), "FBX's GlobalSettings: Y up"
    assert (axes["FrontAxis"], axes["FrontAxisSign"], axes["CoordAxis"]) == (2, 1, 0), "+Z front, X across"
    (mesh,) = found["meshes"]
    low, high = np.asarray(mesh["bounds"])
    assert tallest(np.stack([low, high])) == 2, "Blender (Z-up) imports it standing"
    assert high[2] - low[2] == pytest.approx(np.ptp(upright_scene.bounds[:, 1]), rel=1e-3), "at its size"


def opaque(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path))[:, :, 3] > 0


def test_previews_stand_up_and_show_the_whole_bounding_box(upright_scene: trimesh.Scene, tmp_path: Path) -> None:
    geometry.render_preview(upright_scene, tmp_path / "goblin.png")
    ys, xs = np.nonzero(opaque(tmp_path / "goblin.png"))
    assert np.ptp(ys) > 1.5 * np.ptp(xs), "a standing figure is drawn taller than wide"
    # a long bar far from the origin and a tall thin pole: drawn whole, centred, with a margin on every side
    bar = trimesh.creation.box(extents=(3.0, 0.2, 0.2))
    bar.apply_translation([5.0, 2.0, -1.0])
    pole = trimesh.creation.cylinder(radius=0.05, height=4.0)
    pole.apply_transform(trimesh.transformations.rotation_matrix(np.pi / 2, [1, 0, 0]))  # along Y: standing
    for name, mesh in (("bar", bar), ("pole", pole)):
        dest = tmp_path / f"{name}.png"
        geometry.render_preview(trimesh.Scene(mesh), dest)
        drawn = opaque(dest)
        ys, xs = np.nonzero(drawn)
        size = drawn.shape[0]
        assert min(xs.min(), ys.min()) >= 4 and max(xs.max(), ys.max()) <= size - 5, (name, xs.min(), xs.max())
        assert abs((xs.min() + xs.max()) / 2 - size / 2) < 0.1 * size, name
        assert max(np.ptp(xs), np.ptp(ys)) > 0.6 * size, f"{name} fills the picture"
    ys, xs = np.nonzero(opaque(tmp_path / "pole.png"))
    assert np.ptp(ys) > 4 * np.ptp(xs), "the pole stands"
