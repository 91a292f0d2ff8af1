"""The built-in auto-rigging model, run on the shared goblin and on synthetic limbed shapes; every rig is read back
from the GLB it wrote (pygltflib: joints, inverse bind matrices, JOINTS_0/WEIGHTS_0) and posed from that data."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pygltflib
import pytest
import trimesh
from client_helpers import MESHES, Recorder, assert_valid_gltf, read_fbx, stood_up
from pydantic import ValidationError

from pocket3d.geometry.errors import MeshError
from pocket3d.geometry.formats.fbx import convert_glb
from pocket3d.geometry.gltf_writer import Skeleton
from pocket3d.models.builtin import rigging
from pocket3d.models.builtin.rigging import GeometricRiggingModel, RiggingParams, bone_heat_weights
from pocket3d.models.spec import Device, Feature, InputRejected, ModelSpec, RunInputs

GOBLIN = MESHES / "typical_humanoid_goblin.obj"
HUMANOID_NAMES = {"Hips", "Spine", "Chest", "Neck", "Head", "HeadTop_End"} | {
    side + part for side in ("Left", "Right")
    for part in ("Shoulder", "UpperArm", "LowerArm", "Hand", "Hand_End", "UpperLeg", "LowerLeg", "Foot", "Foot_End")}
COMPONENTS = {5126: np.float32, 5125: np.uint32, 5123: np.uint16, 5121: np.uint8}
WIDTH = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4, "MAT4": 16}


# -- running the model and reading its file ------------------------------------------------------------------------

def rig(mesh: Path, work: Path, recorder: Recorder | None = None, **params) -> Path:
    model = GeometricRiggingModel(ModelSpec("builtin_rigging", Feature.AUTO_RIGGING, frozenset({"mesh"}), ("glb",)))
    model.load(Device("cpu", "cpu", "CPU", 0))
    work.mkdir(parents=True, exist_ok=True)
    recorder = recorder or Recorder()
    outputs = model.run(RunInputs(work_dir=work, mesh=mesh), RiggingParams(**params), recorder)
    reported = recorder.fractions
    assert reported and reported == sorted(reported), "progress is reported, and only forwards"
    assert set(outputs) == {"mesh"} and outputs["mesh"].parent == work
    return outputs["mesh"]


def read_accessor(gltf: pygltflib.GLTF2, index: int) -> np.ndarray:
    acc = gltf.accessors[index]
    view = gltf.bufferViews[acc.bufferView]
    data = np.frombuffer(gltf.binary_blob(), dtype=COMPONENTS[acc.componentType], count=acc.count * WIDTH[acc.type],
                         offset=view.byteOffset + (acc.byteOffset or 0))
    return data.reshape(acc.count, WIDTH[acc.type])


@dataclass
class Rig:
    gltf: pygltflib.GLTF2
    names: list[str]
    heads: np.ndarray  # joint rest positions, from the inverse bind matrices
    positions: np.ndarray
    joints: np.ndarray  # (V, 4) joint indices
    weights: np.ndarray  # (V, 4)

    def joint(self, name: str) -> int:
        return self.names.index(name)

    def weight_of(self, joint_indices: set[int]) -> np.ndarray:
        """Each vertex's total weight on the given joints."""
        return (self.weights * np.isin(self.joints, list(joint_indices))).sum(axis=1)

    def parent(self, joint: int) -> int:
        """The parent joint's index, -1 for the root."""
        nodes = self.gltf.skins[0].joints
        for i, node in enumerate(self.gltf.nodes):
            if nodes[joint] in (node.children or []):
                return nodes.index(i)
        return -1

    def descendants(self, name: str) -> set[int]:
        """The joint and every joint below it, as indices into ``names``."""
        skin_ = self.gltf.skins[0]
        node_of = {n: j for j, n in enumerate(skin_.joints)}
        found, todo = set(), [skin_.joints[self.joint(name)]]
        while todo:
            node = todo.pop()
            found.add(node_of[node])
            todo += self.gltf.nodes[node].children or []
        return found

    def pose(self, rotations: dict[str, np.ndarray]) -> np.ndarray:
        """Linear blend skinning from what the file holds, with the named joints rotated about themselves."""
        skin_ = self.gltf.skins[0]
        ibm = read_accessor(self.gltf, skin_.inverseBindMatrices).reshape(-1, 4, 4).transpose(0, 2, 1)
        parent = {c: i for i, n in enumerate(self.gltf.nodes) for c in (n.children or [])}
        posed = {skin_.joints[self.joint(name)]: r for name, r in rotations.items()}
        world: dict[int, np.ndarray] = {}

        def world_of(node: int) -> np.ndarray:
            if node not in world:
                local = np.eye(4)
                local[:3, 3] = self.gltf.nodes[node].translation or [0, 0, 0]
                local = local @ posed.get(node, np.eye(4))
                world[node] = (world_of(parent[node]) if node in parent else np.eye(4)) @ local
            return world[node]

        mats = np.array([world_of(n) @ ibm[j] for j, n in enumerate(skin_.joints)])
        homo = np.column_stack([self.positions, np.ones(len(self.positions))])
        blended = np.einsum("vk,vkij->vij", self.weights, mats[self.joints])
        return np.einsum("vij,vj->vi", blended, homo)[:, :3]


def read_rig(path: Path) -> Rig:
    gltf = pygltflib.GLTF2().load(str(path))
    (skin_,) = gltf.skins
    prim = gltf.meshes[0].primitives[0]
    ibm = read_accessor(gltf, skin_.inverseBindMatrices).reshape(-1, 4, 4).transpose(0, 2, 1)
    return Rig(gltf, [gltf.nodes[j].name for j in skin_.joints], -ibm[:, :3, 3],
               read_accessor(gltf, prim.attributes.POSITION).astype(float),
               read_accessor(gltf, prim.attributes.JOINTS_0).astype(int),
               read_accessor(gltf, prim.attributes.WEIGHTS_0).astype(float))


def rotation(degrees: float, axis) -> np.ndarray:  # noqa: ANN001 - a 3-vector
    return trimesh.transformations.rotation_matrix(np.radians(degrees), axis)


# -- synthetic shapes ----------------------------------------------------------------------------------------------

def limb(a, b, radius: float) -> trimesh.Trimesh:  # noqa: ANN001 - 3-vectors
    """A capsule from a to b."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    capsule = trimesh.creation.capsule(height=float(np.linalg.norm(b - a)), radius=radius, count=[24, 24])
    capsule.apply_transform(trimesh.geometry.align_vectors([0, 0, 1], b - a))
    capsule.apply_translation((a + b) / 2)
    return capsule


def capsule_person() -> list[trimesh.Trimesh]:
    """A Y-up figure facing +Z, arms held out and down (its left arm on +X), overlapping closed parts."""
    parts = [limb([0, 0.95, 0], [0, 1.4, 0], 0.17), limb([0, 1.45, 0], [0, 1.62, 0], 0.06)]
    head = trimesh.creation.icosphere(subdivisions=3, radius=0.13)
    head.apply_translation([0, 1.72, 0])
    parts.append(head)
    for x in (1, -1):
        parts.append(limb([0.12 * x, 1.45, 0], [0.75 * x, 1.0, 0], 0.055))
        parts.append(limb([0.1 * x, 0.95, 0], [0.13 * x, 0.12, 0], 0.075))
        parts.append(limb([0.13 * x, 0.07, -0.02], [0.13 * x, 0.07, 0.16], 0.05))
    return parts


def starfish() -> tuple[trimesh.Trimesh, list[np.ndarray]]:
    """A flat Z-up body with five arms in the XY plane; returns the mesh and the arms' tips."""
    body = trimesh.creation.icosphere(subdivisions=3, radius=0.3)
    body.apply_scale([1, 1, 0.6])
    tips = [np.array([np.cos(a), np.sin(a), 0.0]) * 1.1 for a in np.radians(np.arange(5) * 72 + 10)]
    arms = [limb(tip * 0.2, tip, 0.09) for tip in tips]
    return trimesh.util.concatenate([body, *arms]), tips


# -- fixtures: each shape rigged once -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def goblin(tmp_path_factory) -> tuple[Path, trimesh.Trimesh]:
    """The shared goblin as the model gets it: turned Y-up by pocket3d's orient stage."""
    work = tmp_path_factory.mktemp("goblin")
    upright = stood_up(trimesh.load(GOBLIN, force="mesh", process=False))
    src = work / "goblin.obj"
    upright.export(src)
    return rig(src, work / "out"), upright


@pytest.fixture(scope="module")
def person(tmp_path_factory) -> tuple[Path, list[trimesh.Trimesh]]:
    work = tmp_path_factory.mktemp("person")
    parts = capsule_person()
    src = work / "person.glb"
    src.write_bytes(trimesh.Scene(parts).export(file_type="glb"))
    return rig(src, work / "out"), parts


@pytest.fixture(scope="module")
def star(tmp_path_factory) -> tuple[Path, trimesh.Trimesh, list[np.ndarray]]:
    work = tmp_path_factory.mktemp("star")
    mesh, tips = starfish()
    src = work / "star.obj"
    mesh.export(src)
    return rig(src, work / "out"), mesh, tips


# -- tests -------------------------------------------------------------------------------------------------------------

def test_the_rigged_files_are_valid_gltf(goblin, person, tmp_path) -> None:
    for path, _ in (goblin, person):
        assert_valid_gltf(path.read_bytes(), tmp_path)


def test_the_goblin_is_rigged_as_a_humanoid_on_its_own_vertices(goblin) -> None:
    path, source = goblin
    r = read_rig(path)
    assert HUMANOID_NAMES <= set(r.names), sorted(HUMANOID_NAMES - set(r.names))
    assert r.names[0] == "Hips"
    assert np.allclose(r.positions, source.vertices, atol=1e-6), "the input's vertices, in the input's order"
    prim = r.gltf.meshes[0].primitives[0]
    uv = read_accessor(r.gltf, prim.attributes.TEXCOORD_0)
    assert np.allclose(uv[:, 1], 1 - source.visual.uv[:, 1], atol=1e-6), "and its UVs (glTF's v runs down)"
    y = {name: r.heads[r.joint(name)][1] for name in r.names}
    assert y["LeftFoot"] < y["LeftLowerLeg"] < y["Hips"] < y["Chest"] < y["Neck"] < y["Head"]
    for side, sign in (("Left", 1), ("Right", -1)):  # a character's left is +X
        assert sign * r.heads[r.joint(side + "Hand")][0] > 0.2 and sign * r.heads[r.joint(side + "Foot")][0] > 0.05
    # the root sits near the middle of the body
    assert np.linalg.norm(r.heads[0] - source.vertices.mean(axis=0)) < 0.15


def test_weights_are_four_a_vertex_and_sum_to_one(goblin, person, star) -> None:
    for path, *_ in (goblin, person, star):
        r = read_rig(path)
        assert np.isfinite(r.weights).all() and (r.weights >= 0).all()
        assert np.allclose(r.weights.sum(axis=1), 1.0, atol=1e-3)
        assert (r.joints < len(r.names)).all()


def test_bending_the_goblins_left_arm_moves_the_arm_and_nothing_far_from_it(goblin) -> None:
    r = read_rig(goblin[0])
    assert np.allclose(r.pose({}), r.positions, atol=1e-5), "the bind pose reproduces the mesh"
    arm = r.descendants("LeftUpperArm")
    posed = r.pose({"LeftUpperArm": rotation(60, [0, 0, 1])})
    moved = np.linalg.norm(posed - r.positions, axis=1)
    on_arm = r.weight_of(arm)
    assert (on_arm > 0.5).sum() > 300, "the arm has many vertices of its own"
    assert np.median(moved[on_arm > 0.5]) > 0.05
    far = np.linalg.norm(r.positions - r.heads[r.joint("LeftUpperArm")], axis=1) > 0.45
    far &= r.positions[:, 0] < 0  # the right half, beyond the upper arm's reach
    assert far.sum() > 1000 and moved[far].max() < 1e-6


def test_the_capsule_figure_is_a_humanoid_and_each_limb_follows_its_joint(person) -> None:
    path, parts = person
    r = read_rig(path)
    assert HUMANOID_NAMES <= set(r.names)
    y = r.heads[:, 1]  # a GLB: Y-up
    assert y[r.joint("LeftFoot")] < y[r.joint("Hips")] < y[r.joint("Chest")] < y[r.joint("Head")]
    assert r.heads[r.joint("LeftHand"), 0] > 0.4 and r.heads[r.joint("RightHand"), 0] < -0.4
    inside = np.any([p.contains(r.heads) for p in parts], axis=0)
    assert inside.all(), [n for n, ok in zip(r.names, inside, strict=True) if not ok]
    left_hand = np.linalg.norm(r.positions - [0.75, 1.0, 0], axis=1) < 0.08
    right_hand = np.linalg.norm(r.positions - [-0.75, 1.0, 0], axis=1) < 0.08
    head, feet = r.positions[:, 1] > 1.75, r.positions[:, 1] < 0.15
    right_foot, left_foot = feet & (r.positions[:, 0] < 0), feet & (r.positions[:, 0] > 0)
    for joint, moves, stays in (("LeftLowerArm", left_hand, right_hand | head),
                                ("RightUpperLeg", right_foot, left_foot | head)):
        moved = np.linalg.norm(r.pose({joint: rotation(45, [0, 0, 1])}) - r.positions, axis=1)
        assert moves.any() and moved[moves].min() > 0.05, joint
        assert moved[stays].max() < 1e-6, joint


def test_a_shape_that_is_no_humanoid_gets_a_generic_chain_per_limb(star, tmp_path) -> None:
    path, mesh, tips = star
    r = read_rig(path)
    assert r.names[0] == "root" and all(n.startswith("branch_") for n in r.names[1:])
    assert np.linalg.norm(r.heads[0]) < 0.1, "the root is near the centre of mass"
    assert mesh.contains(r.heads).all(), "every joint is inside the shape"
    # one chain per arm: each tip has a joint near it
    for tip in tips:
        assert np.linalg.norm(r.heads - tip, axis=1).min() < 0.2
    # rotating the joint where one arm leaves the body swings that arm's tip and leaves the other arms be
    tip_vertices = [np.linalg.norm(r.positions - tip, axis=1) < 0.1 for tip in tips]
    base = int(np.argmin(np.linalg.norm(r.heads - tips[0] * 0.5, axis=1)))
    while r.parent(base) != 0:
        base = r.parent(base)  # up the chain, to the joint that hangs off the root
    moved = np.linalg.norm(r.pose({r.names[base]: rotation(40, [0, 0, 1])}) - r.positions, axis=1)
    assert moved[tip_vertices[0]].min() > 0.2
    assert all(moved[t].max() < 1e-6 for t in tip_vertices[1:])
    with pytest.raises(InputRejected, match="humanoid"):
        rig(path.parents[1] / "star.obj", tmp_path, humanoid="yes")


def test_zero_area_faces_loose_parts_and_vertices_still_get_finite_weights(person, tmp_path) -> None:
    pebble = trimesh.creation.icosphere(subdivisions=1, radius=0.03)
    pebble.apply_translation([1.0, 1.8, 0.0])  # a separate closed piece, away from the figure
    mesh = trimesh.util.concatenate([*capsule_person(), pebble])
    n = len(mesh.vertices)
    midpoint = mesh.vertices[mesh.faces[0, :2]].mean(axis=0)
    vertices = np.vstack([mesh.vertices, midpoint, [5.0, 5.0, 5.0], mesh.vertices[mesh.faces[1, 0]]])
    degenerate = [[mesh.faces[0, 0], n, mesh.faces[0, 1]],  # three points on a line
                  [mesh.faces[2, 0], mesh.faces[2, 0], mesh.faces[2, 1]],  # a repeated corner
                  [n + 2, mesh.faces[1, 0], mesh.faces[1, 1]]]  # a duplicate of a vertex, at the same place
    broken = trimesh.Trimesh(vertices, np.vstack([mesh.faces, degenerate]), process=False)
    src = tmp_path / "broken.ply"
    broken.export(src)
    r = read_rig(rig(src, tmp_path / "out"))
    assert len(r.positions) == len(vertices), "the loose vertex is kept"
    assert np.isfinite(r.weights).all() and np.allclose(r.weights.sum(axis=1), 1.0, atol=1e-3)
    assert HUMANOID_NAMES <= set(r.names), "the figure is still read as one"
    # the weights themselves, before the file keeps four, for the figure's own skeleton
    own = read_rig(person[0])
    skeleton = Skeleton(own.names, [own.parent(j) for j in range(len(own.names))], own.heads)
    weights = bone_heat_weights(broken, skeleton)
    assert np.isfinite(weights).all() and (weights >= 0).all()
    assert np.allclose(weights.sum(axis=1), 1.0)


def test_large_meshes_take_the_weights_of_a_decimated_copy(person, monkeypatch) -> None:
    mesh = trimesh.util.concatenate(capsule_person())
    own = read_rig(person[0])
    skeleton = Skeleton(own.names, [own.parent(j) for j in range(len(own.names))], own.heads)
    full = bone_heat_weights(mesh, skeleton)
    monkeypatch.setattr(rigging, "SOLVE_FACES", len(mesh.faces) // 4)
    coarse = bone_heat_weights(mesh, skeleton)
    assert coarse.shape == full.shape and np.allclose(coarse.sum(axis=1), 1.0)
    assert np.abs(coarse - full).sum(axis=1).mean() < 0.2, "close to the weights solved on the mesh itself"
    assert (coarse.argmax(axis=1) == full.argmax(axis=1)).mean() > 0.85, "mostly the same joint leads"


def test_the_model_reads_the_humanoid_along_y_as_pocket3d_hands_it_over(goblin, tmp_path) -> None:
    """Up is +Y for the model (pocket3d turned the input so): the goblin lying on its back, as the shared Z-up file
    has it, is no standing humanoid; that file comes to the model stood up (see test_orientation)."""
    assert "Hips" in read_rig(goblin[0]).names
    lying = read_rig(rig(GOBLIN, tmp_path / "lying"))
    assert "Hips" not in lying.names
    with pytest.raises(ValidationError):
        RiggingParams(up_axis="z")  # pocket3d's parameter now, taken before the model sees the parameters


def test_a_flat_or_open_mesh_is_rigged_with_a_warning(tmp_path) -> None:
    sheet = trimesh.creation.box(extents=(1.0, 0.6, 0.004))
    sheet.export(tmp_path / "sheet.obj")
    flat = Recorder()
    rig(tmp_path / "sheet.obj", tmp_path / "flat", flat)
    assert [code for code, _ in flat.warnings] == ["FLAT_MESH"], flat.warnings
    cape = trimesh.creation.icosphere(subdivisions=3)
    cape.update_faces(cape.triangles_center[:, 1] > -0.2)  # a sphere with its bottom cut away: a cap, open
    cape.remove_unreferenced_vertices()
    cape.export(tmp_path / "cape.obj")
    opened = Recorder()
    rig(tmp_path / "cape.obj", tmp_path / "open", opened)
    assert "OPEN_MESH" in [code for code, _ in opened.warnings], opened.warnings
    trimesh.creation.icosphere(subdivisions=3).export(tmp_path / "ball.obj")
    closed = Recorder()
    rig(tmp_path / "ball.obj", tmp_path / "closed", closed)
    assert closed.warnings == [], "a closed, round mesh rigs without a warning"


def test_the_rig_converts_to_fbx_with_its_armature(goblin, tmp_path) -> None:
    path, _ = goblin
    r = read_rig(path)
    fbx = tmp_path / "rigged.fbx"
    convert_glb(path, fbx)
    found = read_fbx(fbx)
    (armature,) = found["armatures"]
    assert len(armature["bones"]) == len(r.names)
    assert set(armature["bones"]) == set(r.names)
    (mesh,) = found["meshes"]
    assert set(mesh["vertex_groups"]) <= set(r.names) and "LeftUpperArm" in mesh["vertex_groups"]


def test_unusable_input_is_refused(tmp_path) -> None:
    model = GeometricRiggingModel(ModelSpec("builtin_rigging", Feature.AUTO_RIGGING, frozenset({"mesh"}), ("glb",)))
    with pytest.raises(InputRejected):
        model.run(RunInputs(work_dir=tmp_path), RiggingParams(), lambda f, m: None)
    garbage = tmp_path / "garbage.obj"
    garbage.write_text("this is not a mesh\n")
    with pytest.raises(MeshError):
        model.run(RunInputs(work_dir=tmp_path, mesh=garbage), RiggingParams(), lambda f, m: None)
    with pytest.raises(ValidationError):
        RiggingParams(joints=3)
