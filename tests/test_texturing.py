"""The built-in texture-for-a-mesh model and the projection baking it shares, on synthetic scenes whose right
answer is known and on the shared TRELLIS meshes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import trimesh
from client_helpers import MESHES, SHARED, stood_up
from PIL import Image

from pocket3d.geometry import MeshError
from pocket3d.models.builtin.texturing import (
    ProjectionTextureModel,
    TextureParams,
    View,
    bake_appearance,
    bake_views,
    unwrap,
)
from pocket3d.models.builtin.words import MATERIALS, parse_appearance
from pocket3d.models.spec import Device, Feature, InputRejected, ModelSpec, RunInputs

RED, BLUE, GREEN = (220, 20, 20), (20, 40, 220), (20, 200, 40)
FRONT_VIEW = SHARED / "multiview" / "character_2.png"


def run_model(work: Path, mesh: Path | None, *, images: list[Path] = (), text: str | None = None,
              size: int = 256, **params) -> trimesh.Trimesh:
    model = ProjectionTextureModel(ModelSpec("builtin_texture", Feature.TEXTURE_GENERATION,
                                             frozenset({"mesh", "text", "image"}), ("glb",)))
    model.load(Device("cpu", "cpu", "CPU", 0))
    work.mkdir(parents=True, exist_ok=True)
    inputs = RunInputs(work_dir=work, text=text, images=list(images), mesh=mesh, texture_resolution=size)
    out = model.run(inputs, TextureParams(**params), lambda fraction, message: None)
    assert set(out) == {"mesh"} and out["mesh"] == work / "textured.glb"
    return trimesh.load(out["mesh"], force="mesh", process=False)


def colour_at(mesh: trimesh.Trimesh, texture: Image.Image, points, faces=None) -> np.ndarray:
    """The texture's colour (0..255) where each surface point lies, through the mesh's UVs. Without the faces
    the points lie on, the nearest face of all is searched (small meshes only)."""
    points = np.asarray(points, dtype=float)
    if faces is None:
        triangles = np.tile(mesh.triangles, (len(points), 1, 1))
        closest = trimesh.triangles.closest_point(triangles, np.repeat(points, len(mesh.faces), axis=0))
        distance = np.linalg.norm(closest - np.repeat(points, len(mesh.faces), axis=0), axis=1)
        faces = distance.reshape(len(points), -1).argmin(axis=1)
    bary = trimesh.triangles.points_to_barycentric(mesh.triangles[faces], points)
    uv = np.einsum("ij,ijk->ik", bary, np.asarray(mesh.visual.uv)[mesh.faces[faces]])
    pixels = np.asarray(texture.convert("RGB")).astype(float)
    h, w = pixels.shape[:2]
    rows = np.clip(((1 - uv[:, 1]) * h).astype(int), 0, h - 1)
    cols = np.clip((uv[:, 0] * w).astype(int), 0, w - 1)
    return pixels[rows, cols]


def assert_close(actual, expected, tolerance: float = 30) -> None:
    assert np.abs(np.asarray(actual, float) - np.asarray(expected, float)).max() <= tolerance, (actual, expected)


def halves(left, right, size: int = 64) -> np.ndarray:
    """An opaque RGBA picture, left half one colour, right half another."""
    image = np.zeros((size, size, 4), np.uint8)
    image[:, : size // 2, :3], image[:, size // 2:, :3] = left, right
    image[:, :, 3] = 255
    return image


def save_png(rgba: np.ndarray, path: Path) -> Path:
    Image.fromarray(rgba).save(path)
    return path


def save_mesh(mesh: trimesh.Trimesh, path: Path) -> Path:
    mesh.export(path)
    return path


# -- projection -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("azimuth", "elevation", "on_the_right", "on_the_left"), [
    (0, 0, (0.25, 0, 0.5), (-0.25, 0, 0.5)),  # front: image right is +X
    (90, 0, (0.5, 0, -0.25), (0.5, 0, 0.25)),  # the object's right side: image right is -Z
    (180, 0, (-0.25, 0, -0.5), (0.25, 0, -0.5)),  # back: image right is -X
    (0, 90, (0.25, 0.5, 0), (-0.25, 0.5, 0)),  # from above
])
def test_a_view_colours_the_side_it_faces_the_right_way_round(azimuth, elevation, on_the_right,
                                                              on_the_left) -> None:
    cube = unwrap(trimesh.creation.box(extents=(1, 1, 1)))
    texture = bake_views(cube, [View(halves(RED, BLUE), azimuth, elevation)], 128)
    right, left = colour_at(cube, texture, [on_the_right, on_the_left])
    assert_close(right, BLUE)
    assert_close(left, RED)


def test_a_hidden_surface_does_not_take_the_colour_of_what_hides_it() -> None:
    # A small box in front of a big one; the picture is red with a green square where the small box is.
    big = trimesh.creation.box(extents=(2, 2, 1), transform=trimesh.transformations.translation_matrix([0, 0, -0.5]))
    small = trimesh.creation.box(extents=(0.6, 0.6, 0.6),
                                 transform=trimesh.transformations.translation_matrix([0, 0, 0.8]))
    scene = unwrap(trimesh.util.concatenate([big, small]))
    image = np.zeros((100, 100, 4), np.uint8)
    image[:, :, :3], image[:, :, 3] = RED, 255
    image[40:60, 40:60, :3] = GREEN  # x and y within +-0.2: inside the small box's front
    texture = bake_views(scene, [View(image)], 256)
    small_front, hidden, ring = colour_at(scene, texture, [(0, 0, 1.1), (0, 0, 0), (0.7, 0, 0)])
    assert_close(small_front, GREEN)
    assert_close(ring, RED)
    # Behind the small box, the big box's face is filled from the seen red around it, not projected through.
    assert_close(hidden, RED, tolerance=60)


def test_what_no_view_sees_takes_the_prompts_colour_if_it_names_one(tmp_path) -> None:
    box = save_mesh(trimesh.creation.box(extents=(1, 1, 1)), tmp_path / "box.glb")
    picture = np.zeros((40, 40, 4), np.uint8)
    picture[4:-4, 4:-4] = (*BLUE, 255)  # a blue square on a transparent background
    front = save_png(picture, tmp_path / "front.png")
    plain = run_model(tmp_path / "plain", box, images=[front])
    green = run_model(tmp_path / "green", box, images=[front], text="a green box")
    points = [(0, 0, 0.5), (0, 0, -0.5)]  # front, back
    plain_front, plain_back = colour_at(plain, plain.visual.material.baseColorTexture, points)
    green_front, green_back = colour_at(green, green.visual.material.baseColorTexture, points)
    assert_close(plain_front, BLUE)
    assert_close(green_front, BLUE)
    assert_close(plain_back, BLUE, tolerance=60)  # nearest seen colour
    assert_close(green_back, np.asarray(parse_appearance("green").base_colour) * 255, tolerance=10)


# -- the shared meshes ------------------------------------------------------------------------------------------

def upright_goblin() -> trimesh.Trimesh:
    """The shared goblin as the model gets it: turned Y-up by pocket3d's orient stage."""
    return stood_up(trimesh.load(MESHES / "typical_humanoid_goblin.obj", force="mesh", process=False))


@pytest.fixture(scope="module")
def goblin_from_the_front(tmp_path_factory) -> trimesh.Trimesh:
    work = tmp_path_factory.mktemp("goblin")
    return run_model(work, save_mesh(upright_goblin(), work / "goblin.obj"), images=[FRONT_VIEW], size=512)


def test_a_mesh_with_a_uv_atlas_keeps_its_exact_geometry_and_uvs(goblin_from_the_front) -> None:
    original = upright_goblin()
    out = goblin_from_the_front
    np.testing.assert_array_equal(out.vertices, np.asarray(original.vertices, np.float32))
    np.testing.assert_array_equal(out.faces, original.faces)
    np.testing.assert_allclose(out.visual.uv, original.visual.uv, atol=1e-6)


def test_the_front_of_the_goblin_shows_the_front_picture(goblin_from_the_front) -> None:
    mesh, texture = goblin_from_the_front, goblin_from_the_front.visual.material.baseColorTexture
    assert np.asarray(texture).reshape(-1, 3).std(axis=0).mean() > 20, "a textured look, not one flat colour"
    assert mesh.visual.material.metallicFactor == 0.0
    # Look at the Y-up goblin from its front (+Z) with rays on a grid over its outline, and compare what the
    # texture shows there with the picture at the same place (outlines fitted box to box, as the model does).
    picture = np.asarray(Image.open(FRONT_VIEW).convert("RGBA")).astype(float)
    inside = picture[:, :, 3] > 127
    rows, cols = np.nonzero(inside)
    (x0, y0, _), (x1, y1, _) = mesh.bounds
    grid_x, grid_y = np.meshgrid(np.linspace(x0, x1, 40), np.linspace(y0, y1, 60))
    origins = np.column_stack([grid_x.ravel(), grid_y.ravel(), np.full(grid_x.size, 2.0)])
    hits, _, faces = mesh.ray.intersects_location(origins, np.tile([0.0, 0.0, -1.0], (len(origins), 1)),
                                                  multiple_hits=False)
    seen = colour_at(mesh, texture, hits, faces)
    px = (cols.min() + (hits[:, 0] - x0) / (x1 - x0) * np.ptp(cols)).astype(int)
    py = (rows.min() + (y1 - hits[:, 1]) / (y1 - y0) * np.ptp(rows)).astype(int)
    deep_inside = np.array([inside[max(y - 6, 0):y + 7, max(x - 6, 0):x + 7].all() for x, y in zip(px, py)])
    assert deep_inside.sum() > 300
    difference = np.abs(seen[deep_inside] - picture[py, px, :3][deep_inside]).mean(axis=1)
    shuffled = np.abs(seen[deep_inside] - np.roll(picture[py, px, :3][deep_inside], 97, axis=0)).mean(axis=1)
    assert np.median(difference) < 20, np.median(difference)
    assert np.median(shuffled) > 2 * np.median(difference)


def test_a_mesh_without_uvs_is_unwrapped_and_keeps_its_vertex_positions(tmp_path) -> None:
    source = trimesh.load(MESHES / "typical_creature_robot_dinosour.obj", force="mesh", process=False)
    bare = save_mesh(trimesh.Trimesh(source.vertices, source.faces, process=False), tmp_path / "dino.ply")
    out = run_model(tmp_path / "out", bare, text="a blue robot")
    expected = np.unique(np.asarray(source.vertices, np.float32), axis=0)
    np.testing.assert_array_equal(np.unique(out.vertices, axis=0), expected)
    uv = np.asarray(out.visual.uv)
    assert uv.min() >= 0 and uv.max() <= 1
    a, b, c = (uv[out.faces[:, i]] for i in range(3))
    uv_area = np.abs((b - a)[:, 0] * (c - a)[:, 1] - (b - a)[:, 1] * (c - a)[:, 0]) / 2
    assert (uv_area > 0).mean() > 0.99, "every face has room in the atlas"


def test_a_large_mesh_without_uvs_is_decimated_before_unwrapping(tmp_path) -> None:
    sphere = save_mesh(trimesh.creation.icosphere(subdivisions=5), tmp_path / "sphere.stl")  # 20480 faces
    out = run_model(tmp_path / "out", sphere, text="green", max_faces=2000)
    assert 1500 <= len(out.faces) <= 2100
    np.testing.assert_allclose(np.linalg.norm(out.vertices, axis=1), 1.0, atol=0.02)


# -- text -------------------------------------------------------------------------------------------------------

def test_a_red_wooden_box_is_red_and_rough_like_wood(tmp_path) -> None:
    box = save_mesh(trimesh.creation.box(extents=(1, 0.6, 0.8)), tmp_path / "box.glb")
    out = run_model(tmp_path / "out", box, text="a red wooden box")
    pixels = np.asarray(out.visual.material.baseColorTexture.convert("RGB")).reshape(-1, 3).astype(float)
    red, green, blue = pixels.mean(axis=0)
    assert red > 150 and red > 3 * green and red > 3 * blue, (red, green, blue)
    assert pixels[:, 0].std() > 3, "the grain shows"
    assert out.visual.material.roughnessFactor == pytest.approx(MATERIALS["wood"].roughness)
    assert out.visual.material.metallicFactor == 0.0


def test_two_colours_on_one_piece_go_top_and_bottom() -> None:
    tower = unwrap(trimesh.creation.box(extents=(1, 3, 1)))
    texture = bake_appearance(tower, parse_appearance("a red and blue tower"), 128)
    top, bottom = colour_at(tower, texture, [(0, 1.4, 0.5), (0, -1.4, 0.5)])
    assert_close(top, np.asarray(parse_appearance("red").base_colour) * 255, tolerance=15)
    assert_close(bottom, np.asarray(parse_appearance("blue").base_colour) * 255, tolerance=15)


# -- bad inputs -------------------------------------------------------------------------------------------------

def test_unusable_inputs_are_refused(tmp_path) -> None:
    box = save_mesh(trimesh.creation.box(), tmp_path / "box.glb")
    image = save_png(halves(RED, BLUE), tmp_path / "view.png")
    with pytest.raises(InputRejected, match="at most 4"):
        run_model(tmp_path / "a", box, images=[image] * 5)
    with pytest.raises(InputRejected, match="azimuths"):
        run_model(tmp_path / "b", box, images=[image, image], azimuths=[0])
    with pytest.raises(InputRejected, match="images .* or a text prompt"):
        run_model(tmp_path / "c", box)
    flat = tmp_path / "flat.obj"
    flat.write_text("v 0 0 0\nv 1 0 0\nv 2 0 0\nf 1 2 3\n")  # one face, no area
    with pytest.raises(MeshError, match="zero area"):  # refused where every model loads a mesh
        run_model(tmp_path / "d", flat, text="red")
