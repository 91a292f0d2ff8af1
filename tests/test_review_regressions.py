"""What a review of the geometry and the built-in model found, kept fixed."""

from __future__ import annotations

import zipfile

import numpy as np
import pygltflib
import trimesh
from client_helpers import (
    IMAGES,
    MESHES,
    assert_valid_gltf,
    finish,
    read_fbx,
    upload,
)
from PIL import Image

from pocket3d import geometry
from pocket3d.models.builtin.image_to_mesh import foreground_mask, inflate


def test_a_skinned_result_keeps_its_skin_through_export(client, tmp_path) -> None:
    mesh_id = upload(client, MESHES / "typical_humanoid_goblin.obj")["file_id"]
    job = finish(client, "/rig?wait=30", {"mesh": mesh_id, "model_preference": "test_skinned_tube"})
    data = client.get(job["outputs"][0]["url"].removeprefix("/api/v1")).content
    glb = tmp_path / "rig.glb"
    glb.write_bytes(data)
    assert len(pygltflib.GLTF2().load(str(glb)).skins) == 1
    mesh_id = upload(client, MESHES / "typical_humanoid_goblin.obj")["file_id"]
    job = finish(client, "/rig?wait=30", {"mesh": mesh_id, "model_preference": "test_skinned_tube",
                                          "output_format": "fbx"})
    fbx = tmp_path / "rig.fbx"
    fbx.write_bytes(client.get(_model_url(job)).content)
    (armature,) = read_fbx(fbx)["armatures"]
    assert armature["bones"] == ["root", "mid", "tip"]


def _model_url(job: dict) -> str:
    """The mesh among the outputs (the cut-out stage's image comes first)."""
    return next(o["url"] for o in job["outputs"] if o["name"].startswith("model.")).removeprefix("/api/v1")


def test_silhouette_material_is_matte_white_with_a_texture_and_no_black_fringe(client, tmp_path) -> None:
    file_id = upload(client, IMAGES / "typical_creature_elephant.png")["file_id"]
    job = finish(client, "/mesh/generate?wait=30", {"images": [file_id], "model_preference": "builtin_silhouette"})
    glb = tmp_path / "m.glb"
    glb.write_bytes(client.get(_model_url(job)).content)
    gltf = pygltflib.GLTF2().load(str(glb))
    (material,) = gltf.materials
    pbr = material.pbrMetallicRoughness
    assert pbr.metallicFactor == 0 and pbr.baseColorTexture is not None
    assert pbr.baseColorFactor in (None, [1, 1, 1, 1], [1.0, 1.0, 1.0, 1.0])
    texture = np.asarray(trimesh.load(glb, force="mesh").visual.material.baseColorTexture.convert("RGB"))
    assert texture[:8, :8].max() > 0, "the transparent corner took an object colour, not black"
    # and the FBX keeps the texture
    file_id = upload(client, IMAGES / "typical_creature_elephant.png")["file_id"]
    job = finish(client, "/mesh/generate?wait=30", {"images": [file_id], "model_preference": "builtin_silhouette",
                                                    "output_format": "fbx"})
    fbx = tmp_path / "m.fbx"
    fbx.write_bytes(client.get(_model_url(job)).content)
    assert read_fbx(fbx)["meshes"][0]["images"] >= 1


def test_thin_objects_still_make_a_mesh() -> None:
    rgba = np.zeros((1024, 1024, 4), np.uint8)
    rgba[500:516, 50:970] = (200, 50, 50, 255)  # a 16 px bar across the image
    mesh = inflate(foreground_mask(rgba), rgba, 160, 0.35)
    assert mesh.is_watertight and mesh.volume > 0


def test_segmented_parts_share_one_texture(tmp_path) -> None:
    mesh = trimesh.load(MESHES / "typical_creature_elephant.obj", force="mesh", process=False)
    mesh.visual.material = trimesh.visual.material.PBRMaterial(baseColorTexture=Image.new("RGB", (256, 256), "tan"))
    labels = np.digitize(mesh.triangles_center[:, 0], np.quantile(mesh.triangles_center[:, 0], np.linspace(0, 1, 11)[1:-1]))
    dest = tmp_path / "parts.glb"
    geometry.write_segmented_glb(mesh, labels, dest)
    gltf = pygltflib.GLTF2().load(str(dest))
    assert len(gltf.nodes) == 10 and len(gltf.images) == 1 and len(gltf.materials) == 1
    assert_valid_gltf(dest.read_bytes(), tmp_path)


def test_points_and_lines_beside_a_mesh_do_not_break_exports(tmp_path) -> None:
    scene = trimesh.Scene([trimesh.creation.box(), trimesh.PointCloud(np.random.rand(20, 3)),
                           trimesh.load_path(np.array([[0, 0, 0], [1, 1, 1.0]]))])
    for fmt in ("obj", "usdz", "ply", "stl", "json", "glb"):
        dest = tmp_path / f"x{geometry.FORMATS[fmt].suffix}"
        geometry.export_scene(scene, fmt, dest)
        assert dest.stat().st_size > 0, fmt
    with zipfile.ZipFile(tmp_path / "x.obj.zip") as z:
        assert b"\nf " in z.read("model.obj")


def test_fbx_errors_name_no_server_paths(tmp_path) -> None:
    bad = tmp_path / "bad.glb"
    bad.write_bytes(b"glTF not really")
    try:
        geometry.FORMATS["fbx"].convert_glb(bad, tmp_path / "out.fbx")
    except geometry.MeshError as e:
        assert str(tmp_path) not in str(e) and "/tmp" not in str(e), str(e)
    else:
        raise AssertionError("a broken GLB converted")


def test_json_and_ply_keep_vertex_colours_under_a_material(tmp_path) -> None:
    ball = trimesh.creation.icosphere()
    colors = np.tile([10, 200, 30, 255], (len(ball.vertices), 1)).astype(np.uint8)
    ball.visual = trimesh.visual.TextureVisuals(material=trimesh.visual.material.PBRMaterial())
    ball.visual.vertex_attributes["color"] = colors
    geometry.export_scene(trimesh.Scene(ball), "ply", tmp_path / "b.ply")
    back = trimesh.load(tmp_path / "b.ply")
    assert np.array_equal(back.visual.vertex_colors[0], [10, 200, 30, 255])

