"""Decimation to a target face count (fast-simplification's quadric edge collapse).

A textured mesh is split along its UV seams (a vertex per chart), and simplifying it as it is would pull the
seams apart into holes. So the mesh is welded by position first, simplified, and then every corner of every new
face takes the UV of the closest point on the original surface, looked up within the one UV chart that holds
the face's centre: faces never straddle a seam, and the texture stays where it was.
"""

from __future__ import annotations

import fast_simplification
import numpy as np
import trimesh
from scipy.spatial import cKDTree

from pocket3d.geometry.meshes import weld

CANDIDATES = 16  # original faces examined per corner


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
    welded = weld(mesh.vertices, mesh.faces)
    faces = welded.faces
    faces = faces[(faces[:, 0] != faces[:, 1]) & (faces[:, 1] != faces[:, 2]) & (faces[:, 0] != faces[:, 2])]
    reduction = min(0.99, max(0.0, 1.0 - target_faces / max(len(faces), 1)))
    vertices, new_faces = fast_simplification.simplify(welded.vertices, faces,
                                                       target_reduction=reduction)
    visual = mesh.visual
    uv = getattr(visual, "uv", None) if visual.kind == "texture" else None
    if uv is not None and len(uv) == len(mesh.vertices):
        return _with_uvs(mesh, np.asarray(uv, dtype=float), vertices, new_faces)
    out = trimesh.Trimesh(vertices, new_faces, process=False)
    if visual.kind == "vertex":
        nearest = cKDTree(mesh.vertices).query(vertices)[1]
        out.visual = trimesh.visual.ColorVisuals(out, vertex_colors=visual.vertex_colors[nearest])
    elif getattr(visual, "material", None) is not None:
        out.visual = trimesh.visual.TextureVisuals(material=visual.material)  # a plain material colour
    return out


def _with_uvs(mesh: trimesh.Trimesh, uv: np.ndarray, vertices: np.ndarray, faces: np.ndarray) -> trimesh.Trimesh:
    charts = trimesh.graph.connected_component_labels(mesh.face_adjacency, node_count=len(mesh.faces))
    originals = mesh.triangles
    centres = cKDTree(mesh.triangles_center)
    new_tris = vertices[faces]
    face_chart = charts[centres.query(new_tris.mean(axis=1))[1]]
    corners = new_tris.reshape(-1, 3)
    corner_chart = np.repeat(face_chart, 3)
    k = min(CANDIDATES, len(mesh.faces))
    candidates = centres.query(corners, k=k)[1].reshape(len(corners), k)
    tris = originals[candidates]  # (corners, k, 3, 3)
    closest = trimesh.triangles.closest_point(tris.reshape(-1, 3, 3), np.repeat(corners, k, axis=0))
    distance = np.linalg.norm(closest - np.repeat(corners, k, axis=0), axis=1).reshape(len(corners), k)
    in_chart = charts[candidates] == corner_chart[:, None]
    # Prefer a face of the face's own chart; a corner with none nearby takes the nearest face of any chart.
    pick = np.where(in_chart.any(axis=1), np.argmin(np.where(in_chart, distance, np.inf), axis=1),
                    np.argmin(distance, axis=1))
    rows = np.arange(len(corners))
    chosen = candidates[rows, pick]
    points = closest.reshape(len(corners), k, 3)[rows, pick]
    bary = trimesh.triangles.points_to_barycentric(originals[chosen], points)
    corner_uv = np.einsum("ij,ijk->ik", bary, uv[mesh.faces[chosen]])
    # A vertex per distinct (position, uv): shared inside a chart, split along seams, like the input.
    keys = np.column_stack([faces.reshape(-1), np.round(corner_uv, 6)])
    unique, index = np.unique(keys, axis=0, return_inverse=True)
    out_vertices = vertices[unique[:, 0].astype(np.int64)]
    out = trimesh.Trimesh(out_vertices, index.reshape(-1, 3), process=False)
    out.visual = trimesh.visual.TextureVisuals(uv=unique[:, 1:3], material=mesh.visual.material)
    return out
