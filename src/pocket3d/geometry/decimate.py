"""Decimation to a target face count (fast-simplification's quadric edge collapse).

The collapse moves vertices and drops per-vertex data, so UVs and vertex colours are carried over from the
nearest original vertex: cheap, and faithful away from UV seams.
"""

from __future__ import annotations

import fast_simplification
import numpy as np
import trimesh
from scipy.spatial import cKDTree


def decimate_scene(scene: trimesh.Scene, target_faces: int) -> trimesh.Scene:
    """A copy of ``scene`` with about ``target_faces`` faces in all, shared in proportion to each mesh's size."""
    meshes = {name: g for name, g in scene.geometry.items() if isinstance(g, trimesh.Trimesh)}
    total = sum(len(g.faces) for g in meshes.values())
    if total <= target_faces:
        return scene
    out = scene.copy()
    for name, mesh in meshes.items():
        keep = max(4, int(round(len(mesh.faces) * target_faces / total)))
        out.geometry[name] = decimate_mesh(mesh, keep)
    return out


def decimate_mesh(mesh: trimesh.Trimesh, target_faces: int) -> trimesh.Trimesh:
    if len(mesh.faces) <= target_faces:
        return mesh
    reduction = 1.0 - target_faces / len(mesh.faces)
    vertices, faces = fast_simplification.simplify(mesh.vertices.astype(np.float64), mesh.faces.astype(np.int64),
                                                   target_reduction=reduction)
    nearest = cKDTree(mesh.vertices).query(vertices)[1]
    visual = mesh.visual
    if visual.kind == "texture" and getattr(visual, "uv", None) is not None and len(visual.uv) == len(mesh.vertices):
        new_visual = trimesh.visual.TextureVisuals(uv=visual.uv[nearest], material=visual.material)
    elif visual.kind == "vertex":
        new_visual = trimesh.visual.ColorVisuals(vertex_colors=visual.vertex_colors[nearest])
    else:
        new_visual = None  # face colours and materials without UVs do not survive a collapse
    return trimesh.Trimesh(vertices, faces, visual=new_visual, process=False)
