"""Skinned and segmented glTF, read back from the file: the Khronos validator, pygltflib and trimesh."""

from __future__ import annotations

import json

import numpy as np
import pygltflib
import pytest
import trimesh
from client_helpers import MESHES, assert_valid_gltf, read_fbx, upload

from pocket3d import geometry
from pocket3d.geometry.gltf_writer import top_weights

COMPONENTS = {5126: np.float32, 5125: np.uint32, 5123: np.uint16, 5121: np.uint8}
WIDTH = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4, "MAT4": 16}


def read_accessor(gltf: pygltflib.GLTF2, index: int) -> np.ndarray:
    acc = gltf.accessors[index]
    view = gltf.bufferViews[acc.bufferView]
    blob = gltf.binary_blob()
    data = np.frombuffer(blob, dtype=COMPONENTS[acc.componentType], count=acc.count * WIDTH[acc.type],
                         offset=view.byteOffset + (acc.byteOffset or 0))
    return data.reshape(acc.count, WIDTH[acc.type])


def tube_with_three_joints():
    """A tube along z from -1 to 1; joints at -1 (root), 0 and 1, weights falling off with distance."""
    mesh = trimesh.creation.cylinder(radius=0.2, height=2.0, sections=16)
    mesh = mesh.subdivide().subdivide()
    heads = np.array([[0, 0, -1.0], [0, 0, 0.0], [0, 0, 1.0]])
    skeleton = geometry.Skeleton(names=["root", "mid", "tip"], parents=[-1, 0, 1], heads=heads)
    z = mesh.vertices[:, 2]
    weights = np.column_stack([np.clip(-z, 0, 1), 1 - np.abs(z), np.clip(z, 0, 1)]) + 1e-6
    return mesh, skeleton, weights


def skin(gltf: pygltflib.GLTF2, posed_local: dict[int, np.ndarray]) -> np.ndarray:
    """Linear blend skinning from what the file holds: joint hierarchy, inverse bind matrices, JOINTS/WEIGHTS."""
    prim = gltf.meshes[0].primitives[0]
    positions = read_accessor(gltf, prim.attributes.POSITION).astype(float)
    joints = read_accessor(gltf, prim.attributes.JOINTS_0)
    weights = read_accessor(gltf, prim.attributes.WEIGHTS_0).astype(float)
    skin_ = gltf.skins[0]
    ibm = read_accessor(gltf, skin_.inverseBindMatrices).reshape(-1, 4, 4).transpose(0, 2, 1)
    parent = {c: i for i, n in enumerate(gltf.nodes) for c in (n.children or [])}
    world: dict[int, np.ndarray] = {}

    def world_of(node: int) -> np.ndarray:
        if node not in world:
            local = np.eye(4)
            local[:3, 3] = gltf.nodes[node].translation or [0, 0, 0]
            local = local @ posed_local.get(node, np.eye(4))
            world[node] = (world_of(parent[node]) if node in parent else np.eye(4)) @ local
        return world[node]

    mats = np.array([world_of(n) @ ibm[j] for j, n in enumerate(skin_.joints)])
    homo = np.column_stack([positions, np.ones(len(positions))])
    blended = np.einsum("vk,vkij->vij", weights, mats[joints])
    return np.einsum("vij,vj->vi", blended, homo)[:, :3]


def test_skinned_glb_is_valid_and_moves_what_a_joint_weights(tmp_path) -> None:
    mesh, skeleton, weights = tube_with_three_joints()
    dest = tmp_path / "rig.glb"
    geometry.write_skinned_glb(mesh, skeleton, weights, dest)
    assert_valid_gltf(dest.read_bytes(), tmp_path)

    gltf = pygltflib.GLTF2().load(str(dest))
    (skin_,) = gltf.skins
    assert [gltf.nodes[j].name for j in skin_.joints] == ["root", "mid", "tip"]
    w = read_accessor(gltf, gltf.meshes[0].primitives[0].attributes.WEIGHTS_0)
    assert np.allclose(w.sum(axis=1), 1.0, atol=1e-5)

    rest = skin(gltf, {})
    assert np.allclose(rest, mesh.vertices, atol=1e-5), "the bind pose reproduces the mesh"
    bend = trimesh.transformations.rotation_matrix(np.pi / 2, [1, 0, 0])
    posed = skin(gltf, {skin_.joints[1]: bend})  # rotate the middle joint by 90 degrees
    moved = np.linalg.norm(posed - mesh.vertices, axis=1)
    z = mesh.vertices[:, 2]
    assert moved[z < -0.99].max() < 1e-4, "vertices weighted (all but 1e-6) to the root stay still"
    assert moved[z > 0.99].min() > 0.5, "vertices past the bent joint swing with it"

    back = trimesh.load(dest, force="mesh")
    assert len(back.faces) == len(mesh.faces)


def test_skinned_glb_to_fbx_keeps_the_armature_and_weights(tmp_path) -> None:
    mesh, skeleton, weights = tube_with_three_joints()
    glb, fbx = tmp_path / "rig.glb", tmp_path / "rig.fbx"
    geometry.write_skinned_glb(mesh, skeleton, weights, glb)
    geometry.FORMATS["fbx"].convert_glb(glb, fbx)
    found = read_fbx(fbx)
    (armature,) = found["armatures"]
    assert armature["bones"] == ["root", "mid", "tip"]
    (skinned,) = found["meshes"]
    assert skinned["polygons"] == len(mesh.faces) and sorted(skinned["vertex_groups"]) == ["mid", "root", "tip"]


def test_an_fbx_upload_is_read_through_blender(make_server, tmp_path) -> None:
    mesh, skeleton, weights = tube_with_three_joints()
    glb, fbx = tmp_path / "rig.glb", tmp_path / "rig.fbx"
    geometry.write_skinned_glb(mesh, skeleton, weights, glb)
    geometry.FORMATS["fbx"].convert_glb(glb, fbx)
    scene = geometry.load_scene(fbx, "fbx")
    assert sum(len(g.faces) for g in scene.geometry.values()) == len(mesh.faces)
    srv = make_server()
    with srv.client() as c:
        info = upload(c, fbx)
        assert info["format"] == "fbx" and info["kind"] == "mesh"
        broken = tmp_path / "broken.fbx"
        broken.write_bytes(fbx.read_bytes()[:2000])
        with open(broken, "rb") as f:
            r = c.post("/files", files={"file": ("broken.fbx", f)})
        assert r.status_code == 422 and r.json()["error_code"] == "INVALID_MESH"


def test_fbx_conversion_failure_is_an_export_error(tmp_path) -> None:
    bad = tmp_path / "bad.glb"
    bad.write_bytes(b"glTF not really")
    with pytest.raises(geometry.MeshError) as e:
        geometry.FORMATS["fbx"].convert_glb(bad, tmp_path / "out.fbx")
    assert e.value.code == "EXPORT_FAILED"


def test_top_weights_keeps_four_and_renormalises() -> None:
    w = np.array([[0.1, 0.2, 0.3, 0.4, 0.5], [1, 0, 0, 0, 0]], dtype=float)
    joints, top = top_weights(w)
    assert joints[0].tolist() == [4, 3, 2, 1] and np.allclose(top.sum(axis=1), 1)
    with pytest.raises(ValueError):
        top_weights(np.zeros((1, 3)))
    with pytest.raises(ValueError):
        geometry.Skeleton(names=["a", "b"], parents=[-1, -1], heads=np.zeros((2, 3)))


def test_segmented_glb_has_a_named_node_per_part(tmp_path) -> None:
    mesh = trimesh.load(MESHES / "typical_creature_robot_dinosour.obj", force="mesh", process=False)
    labels = (mesh.triangles_center[:, 0] > np.median(mesh.triangles_center[:, 0])).astype(int)
    dest = tmp_path / "parts.glb"
    geometry.write_segmented_glb(mesh, labels, dest, names={0: "left", 1: "right"})
    assert_valid_gltf(dest.read_bytes(), tmp_path)
    gltf = pygltflib.GLTF2().load(str(dest))
    parts = {n.name: n.extras["part_id"] for n in gltf.nodes}
    assert parts == {"left": 0, "right": 1}
    scene = trimesh.load(dest, force="scene")
    assert sum(len(g.faces) for g in scene.geometry.values()) == len(mesh.faces)
    assert all(g.visual.kind == "texture" for g in scene.geometry.values()), "the parts keep their UVs"
    sidecar = tmp_path / "labels.json"
    geometry.write_face_labels(labels, sidecar, names={0: "left", 1: "right"})
    body = json.loads(sidecar.read_text())
    assert body["face_labels"] == labels.tolist() and [p["faces"] for p in body["parts"]] == np.bincount(labels).tolist()
