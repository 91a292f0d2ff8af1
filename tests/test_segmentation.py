"""The built-in part segmentation: on synthetic shapes whose parts are known (CAD-like unions of primitives,
smoothly blended shapes, a limbed shape), scored by area-weighted accuracy after matching predicted parts to true
ones; and through the adapter on a real generated mesh and a multi-node GLB.

Each accuracy floor sits above what a broken segmentation scores on the same shape (one label for everything,
random labels, and the method that does not suit the shape), which the tests measure and print too."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import pygltflib
import pytest
import trimesh
from client_helpers import MESHES
from pydantic import ValidationError
from scipy.optimize import linear_sum_assignment
from skimage.measure import marching_cubes

from pocket3d.models.builtin.segmentation import GeometricSegmentationModel, SegmentationParams, segment
from pocket3d.models.spec import Device, Feature, InputRejected, ModelSpec, RunInputs

CAD_FLOOR = 0.97  # one label scores 0.70-0.82 on these unions; curvature 0.82-0.88
SMOOTH_FLOOR = 0.9  # one label 0.50-0.68; sharp edges find no part in these blends
LIMBED_FLOOR = 0.85  # one label 0.36-0.45; curvature (no crease to see) 0.36


def area_accuracy(predicted: np.ndarray, truth: np.ndarray, areas: np.ndarray) -> float:
    """Share of the area whose predicted part is matched to its true part, under the best one-to-one matching."""
    _, p = np.unique(predicted, return_inverse=True)
    _, t = np.unique(truth, return_inverse=True)
    overlap = np.zeros((p.max() + 1, t.max() + 1))
    np.add.at(overlap, (p, t), areas)
    rows, cols = linear_sum_assignment(-overlap)
    return float(overlap[rows, cols].sum() / areas.sum())


def broken_scores(mesh: trimesh.Trimesh, truth: np.ndarray) -> dict[str, float]:
    rng = np.random.default_rng(0)
    return {"one label": area_accuracy(np.zeros(len(mesh.faces), int), truth, mesh.area_faces),
            "random labels": area_accuracy(rng.integers(0, truth.max() + 1, len(mesh.faces)), truth, mesh.area_faces)}


def score(mesh: trimesh.Trimesh, truth: np.ndarray, method: str) -> tuple[float, set[str]]:
    result = segment(mesh.vertices, mesh.faces, method=method)
    return area_accuracy(result.labels, truth, mesh.area_faces), set(result.part_methods)


# -- shapes with known parts ------------------------------------------------------------------------------------

def _placed(offset: tuple[float, float, float], angle: float = 0.0, axis: tuple = (0, 0, 1)) -> np.ndarray:
    matrix = trimesh.transformations.rotation_matrix(angle, axis)
    matrix[:3, 3] = offset
    return matrix


def _primitive_distance(primitive: trimesh.primitives.Primitive, points: np.ndarray) -> np.ndarray:
    """Unsigned distance to a box's or a capped cylinder's surface (exact SDFs, in the primitive's frame)."""
    inverse = np.linalg.inv(primitive.primitive.transform)
    q = points @ inverse[:3, :3].T + inverse[:3, 3]
    if isinstance(primitive, trimesh.primitives.Box):
        d = np.abs(q) - np.asarray(primitive.primitive.extents) / 2
    else:
        d = np.column_stack([np.linalg.norm(q[:, :2], axis=1) - primitive.primitive.radius,
                             np.abs(q[:, 2]) - primitive.primitive.height / 2])
    return np.abs(np.linalg.norm(np.maximum(d, 0), axis=1) + np.minimum(d.max(axis=1), 0))


CAD_SHAPES = {
    "box_and_cylinder": lambda: [
        trimesh.primitives.Box(extents=(2.0, 1.0, 1.0)),
        trimesh.primitives.Cylinder(radius=0.3, height=1.2, transform=_placed((0.3, 0, 0.9)))],
    "box_turned_box_and_crossbar": lambda: [
        trimesh.primitives.Box(extents=(2.0, 1.2, 0.8)),
        trimesh.primitives.Box(extents=(0.8, 0.8, 0.8), transform=_placed((-0.4, 0, 0.6), np.pi / 4)),
        trimesh.primitives.Cylinder(radius=0.25, height=1.0, sections=48,
                                    transform=_placed((1.2, 0.1, 0), np.pi / 2, (0, 1, 0)))],
}


@functools.cache
def cad_union(name: str) -> tuple[trimesh.Trimesh, np.ndarray]:
    """A boolean union (manifold3d), subdivided twice as exporters often leave planar faces; truth: the
    primitive whose surface each face lies on."""
    primitives = CAD_SHAPES[name]()
    mesh = trimesh.boolean.union([p.to_mesh() for p in primitives], engine="manifold")
    mesh = mesh.subdivide().subdivide()
    truth = np.column_stack([_primitive_distance(p, mesh.triangles_center) for p in primitives]).argmin(axis=1)
    return mesh, truth


def _sphere(centre, radius):
    return lambda p: np.linalg.norm(p - np.asarray(centre, float), axis=-1) - radius


def _capsule(a, b, radius):
    a, b = np.asarray(a, float), np.asarray(b, float)

    def sdf(p):
        h = np.clip(((p - a) @ (b - a)) / ((b - a) @ (b - a)), 0, 1)
        return np.linalg.norm(p - a - h[..., None] * (b - a), axis=-1) - radius
    return sdf


def _ellipsoid(centre, radii):
    radii = np.asarray(radii, float)
    return lambda p: (np.linalg.norm((p - np.asarray(centre, float)) / radii, axis=-1) - 1) * radii.min()


def _round_cone(a, b, r1, r2):
    """Inigo Quilez's exact SDF of a cone between spheres of radius r1 at a and r2 at b."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    ba = b - a
    l2 = ba @ ba
    rr = r1 - r2
    a2 = l2 - rr * rr

    def sdf(p):
        pa = p - a
        y = pa @ ba
        z = y - l2
        x = pa * l2 - y[..., None] * ba
        x2 = np.einsum("...i,...i->...", x, x)
        k = np.sign(rr) * rr * rr * x2
        side = (np.sqrt(x2 * a2 / l2) + y * rr) / l2 - r1
        near_b = np.sign(z) * a2 * z * z * l2 > k
        near_a = np.sign(y) * a2 * y * y * l2 < k
        return np.where(near_b, np.sqrt(x2 + z * z * l2) / l2 - r2,
                        np.where(near_a, np.sqrt(x2 + y * y * l2) / l2 - r1, side))
    return sdf


BLENDS = {  # (primitives, smooth-min radius)
    "snowman": ([_sphere((0, 0, -0.6), 1.0), _sphere((0, 0, 1.0), 0.7)], 0.4),
    "ball_with_three_arms": ([_sphere((0, 0, 0), 0.9), _capsule((0, 0, 0), (1.9, 0, 0), 0.35),
                              _capsule((0, 0, 0), (-0.9, 1.6, 0), 0.35),
                              _capsule((0, 0, 0), (-0.9, -0.8, 1.4), 0.35)], 0.2),
    # a body on four thick tapered legs, joined without a crease the curvature could see
    "table_animal": ([_ellipsoid((0, 0, 0.5), (1.4, 0.8, 0.5))]
                     + [_round_cone((x, y, 0.4), (x, 1.2 * y, -1.5), 0.4, 0.12) for x in (-0.9, 0.9)
                        for y in (-0.5, 0.5)], 0.3),
    # the same body on four slim straight legs
    "slim_legged_animal": ([_ellipsoid((0, 0, 0.5), (1.4, 0.6, 0.5))]
                           + [_capsule((x, y, 0.4), (x, y, -1.6), 0.18) for x in (-0.9, 0.9) for y in (-0.35, 0.35)],
                           0.3),
}


@functools.cache
def blended(name: str, resolution: int = 72) -> tuple[trimesh.Trimesh, np.ndarray]:
    """Primitives' SDFs joined by a polynomial smooth minimum, meshed by marching cubes; truth: the primitive
    nearest each face."""
    primitives, k = BLENDS[name]
    axis = np.linspace(-2.5, 2.5, resolution)
    grid = np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), axis=-1)
    field = primitives[0](grid)
    for sdf in primitives[1:]:
        other = sdf(grid)
        h = np.clip(0.5 + 0.5 * (other - field) / k, 0, 1)
        field = other * (1 - h) + field * h - k * h * (1 - h)
    step = axis[1] - axis[0]
    vertices, faces, _, _ = marching_cubes(field, 0.0, spacing=(step, step, step))
    mesh = trimesh.Trimesh(vertices - 2.5, faces)
    truth = np.column_stack([sdf(mesh.triangles_center) for sdf in primitives]).argmin(axis=1)
    return mesh, truth


# -- accuracy on known parts ------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(CAD_SHAPES))
def test_cad_unions_are_cut_along_their_concave_edges(name: str) -> None:
    mesh, truth = cad_union(name)
    accuracy, methods = score(mesh, truth, "auto")
    wrong = broken_scores(mesh, truth) | {"curvature": score(mesh, truth, "curvature")[0]}
    print(f"{name}: auto {accuracy:.3f} ({methods}); broken: {wrong}")
    assert methods == {"sharp_edges"}, "auto should see a CAD-like union"
    assert accuracy >= CAD_FLOOR
    assert max(wrong.values()) < CAD_FLOOR, "the floor must be out of reach of a broken segmentation"


@pytest.mark.parametrize("name", ["snowman", "ball_with_three_arms"])
def test_smooth_blends_are_cut_at_their_creases(name: str) -> None:
    mesh, truth = blended(name)
    accuracy, methods = score(mesh, truth, "auto")
    wrong = broken_scores(mesh, truth) | {"sharp_edges": score(mesh, truth, "sharp_edges")[0]}
    print(f"{name}: auto {accuracy:.3f} ({methods}); broken: {wrong}")
    assert methods == {"curvature"}
    assert accuracy >= SMOOTH_FLOOR
    assert max(wrong.values()) < SMOOTH_FLOOR


def test_auto_falls_back_to_the_skeleton_for_limbs_without_creases() -> None:
    mesh, truth = blended("table_animal")
    accuracy, methods = score(mesh, truth, "auto")
    wrong = broken_scores(mesh, truth) | {"curvature": score(mesh, truth, "curvature")[0],
                                          "sharp_edges": score(mesh, truth, "sharp_edges")[0]}
    print(f"table_animal: auto {accuracy:.3f} ({methods}); broken: {wrong}")
    assert methods == {"skeleton"}
    assert accuracy >= LIMBED_FLOOR
    assert max(wrong.values()) < LIMBED_FLOOR


def test_an_inside_out_mesh_gets_the_same_parts() -> None:
    mesh, _ = blended("ball_with_three_arms")
    assert mesh.volume > 0
    outward = segment(mesh.vertices, mesh.faces)
    inside_out = segment(mesh.vertices, mesh.faces[:, ::-1])
    assert outward.count == 4
    assert np.array_equal(outward.labels, inside_out.labels)


def test_the_skeleton_finds_each_leg() -> None:
    mesh, truth = blended("slim_legged_animal")
    result = segment(mesh.vertices, mesh.faces, method="skeleton")
    accuracy = area_accuracy(result.labels, truth, mesh.area_faces)
    wrong = broken_scores(mesh, truth) | {"sharp_edges": score(mesh, truth, "sharp_edges")[0]}
    print(f"slim_legged_animal: skeleton {accuracy:.3f}; broken: {wrong}")
    assert result.count == 5  # a body and four legs
    assert accuracy >= LIMBED_FLOOR
    assert max(wrong.values()) < LIMBED_FLOOR


# -- counts and labels ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("wanted", [2, 5, 12])
def test_num_parts_is_honoured_exactly(wanted: int) -> None:
    mesh, truth = cad_union("box_turned_box_and_crossbar")  # three parts found: fewer merges, more splits
    result = segment(mesh.vertices, mesh.faces, num_parts=wanted)
    assert result.count == wanted
    assert sorted(set(result.labels.tolist())) == list(range(wanted)), "labels are 0..k-1"
    area = np.bincount(result.labels, weights=mesh.area_faces)
    assert (np.diff(area) <= 0).all(), "part 0 is the largest"
    if wanted == 2:  # the smallest part (the crossbar) joins the one it sticks into (the long box)
        assert area_accuracy(result.labels, truth == 1, mesh.area_faces) > 0.99


def test_uv_seams_do_not_cut_parts() -> None:
    with_seams = trimesh.load(MESHES / "typical_creature_robot_dinosour.obj", process=False)
    seamless = with_seams.copy()
    seamless.merge_vertices(merge_tex=True, merge_norm=True)  # faces keep their order
    assert len(seamless.vertices) < len(with_seams.vertices), "the OBJ splits its vertices at UV seams"
    split = segment(with_seams.vertices, with_seams.faces)
    whole = segment(seamless.vertices, seamless.faces)
    assert split.count >= 2
    assert np.array_equal(split.labels, whole.labels)


def test_specks_and_degenerate_faces_join_a_neighbour() -> None:
    ball = trimesh.creation.icosphere(subdivisions=4)
    speck = trimesh.creation.icosphere(subdivisions=0, radius=0.01)
    speck.apply_translation((1.5, 0, 0))
    vertices = np.vstack([ball.vertices, speck.vertices])
    faces = np.vstack([ball.faces, speck.faces + len(ball.vertices), [[0, 0, 0], [1, 1, 2]]])
    result = segment(vertices, faces)
    assert result.count == 1
    assert len(result.labels) == len(faces)


def test_too_few_faces_for_num_parts_gives_as_many_as_there_are() -> None:
    icosahedron = trimesh.creation.icosphere(subdivisions=0)  # 20 faces
    result = segment(icosahedron.vertices, icosahedron.faces, num_parts=64)
    assert result.count == 20


# -- through the adapter ----------------------------------------------------------------------------------------

def _run(mesh_path: Path, work_dir: Path, **params) -> tuple[dict[str, Path], list[str]]:
    model = GeometricSegmentationModel(ModelSpec("builtin_segmentation", Feature.SEGMENTATION,
                                                 frozenset({"mesh"}), ("glb",)))
    model.load(Device(id="cpu", kind="cpu", name="cpu", memory_total=0))
    messages: list[str] = []
    outputs = model.run(RunInputs(work_dir=work_dir, mesh=mesh_path), SegmentationParams(**params),
                        lambda fraction, message: messages.append(message or ""))
    return outputs, messages


def _glb_parts(path: Path) -> list[tuple[str, int, np.ndarray]]:
    """(node name, extras.part_id, triangle corners) per node of the GLB, read back with pygltflib."""
    gltf = pygltflib.GLTF2().load(str(path))
    out = []
    for node in gltf.nodes:
        primitive = gltf.meshes[node.mesh].primitives[0]
        positions = _accessor(gltf, primitive.attributes.POSITION).reshape(-1, 3)
        indices = _accessor(gltf, primitive.indices).reshape(-1, 3)
        out.append((node.name, node.extras["part_id"], positions[indices]))
    return out


def _accessor(gltf: pygltflib.GLTF2, index: int) -> np.ndarray:
    accessor = gltf.accessors[index]
    view = gltf.bufferViews[accessor.bufferView]
    dtype = {5126: np.float32, 5125: np.uint32, 5123: np.uint16}[accessor.componentType]
    width = {"SCALAR": 1, "VEC2": 2, "VEC3": 3}[accessor.type]
    data = gltf.binary_blob()[view.byteOffset + (accessor.byteOffset or 0):][:accessor.count * width * 4]
    return np.frombuffer(data, dtype=dtype, count=accessor.count * width)


def test_a_generated_obj_is_segmented_end_to_end(tmp_path: Path) -> None:
    source = MESHES / "typical_humanoid_goblin.obj"
    outputs, messages = _run(source, tmp_path)
    assert set(outputs) == {"mesh", "labels"}
    assert outputs["mesh"].name == "segmented.glb" and outputs["labels"].suffix == ".json"
    labels_file = json.loads(outputs["labels"].read_text())
    labels = np.array(labels_file["face_labels"])
    parts = _glb_parts(outputs["mesh"])
    count = len(parts)
    assert count >= 2
    assert [(name, part_id) for name, part_id, _ in parts] == [(f"part_{i}", i) for i in range(count)]
    assert sorted(set(labels.tolist())) == list(range(count))
    assert len(labels) == sum(len(triangles) for _, _, triangles in parts), "a label per face of the GLB"
    # The labels follow the input's faces, in order (the OBJ's vertices are split at UV seams).
    original = trimesh.load(source, process=False)
    assert len(labels) == len(original.faces)
    for _, part_id, triangles in parts:
        expected = original.vertices[original.faces[labels == part_id]]
        assert np.allclose(triangles, expected, atol=1e-5)
    methods = {part["method"] for part in labels_file["parts"]}
    assert methods <= {"components", "sharp_edges", "curvature", "skeleton"}
    assert any(method in messages[-1] for method in methods), "the progress says which method it used"


def test_a_multi_node_glb_is_segmented_in_world_space(tmp_path: Path) -> None:
    ball = trimesh.creation.icosphere(subdivisions=3)
    ball.visual.vertex_colors = (200, 30, 30, 255)
    scene = trimesh.Scene()
    scene.add_geometry(ball, node_name="ball", transform=trimesh.transformations.translation_matrix((3, 0, 0)))
    scene.add_geometry(trimesh.creation.box((1, 1, 1)), node_name="box")
    source = tmp_path / "two.glb"
    scene.export(source)
    outputs, _ = _run(source, tmp_path, num_parts=2)
    back = trimesh.load(outputs["mesh"], force="scene")
    assert np.allclose(back.bounds, [[-0.5, -1, -1], [4, 1, 1]], atol=1e-5)
    sizes = sorted(len(g.faces) for g in back.geometry.values())
    assert sizes == [12, len(ball.faces)], "each piece is a part"
    coloured = [g for g in back.geometry.values() if len(g.faces) == len(ball.faces)][0]
    assert coloured.visual.kind == "vertex" and (coloured.visual.vertex_colors[:, 0] == 200).all()


def test_a_request_without_a_mesh_is_refused(tmp_path: Path) -> None:
    model = GeometricSegmentationModel(ModelSpec("s", Feature.SEGMENTATION, frozenset({"mesh"}), ("glb",)))
    with pytest.raises(InputRejected):
        model.run(RunInputs(work_dir=tmp_path), SegmentationParams(), lambda fraction, message: None)


def test_a_mesh_without_area_is_refused() -> None:
    with pytest.raises(InputRejected):
        segment(np.eye(3), np.array([[0, 0, 0], [1, 2, 2]]))


@pytest.mark.parametrize("params", [{"num_parts": 1}, {"num_parts": 65}, {"method": "magic"}, {"parts": 3}])
def test_bad_parameters_are_refused(params: dict) -> None:
    with pytest.raises(ValidationError):
        SegmentationParams(**params)
