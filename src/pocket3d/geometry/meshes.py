"""Scene helpers the exporters share: only triangle meshes, and meshes merged in world coordinates."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import trimesh

from pocket3d.geometry.errors import MeshError


def only_triangles(scene: trimesh.Scene) -> trimesh.Scene:
    """The scene without point clouds and lines, which no mesh format here writes."""
    others = [name for name, g in scene.geometry.items() if not isinstance(g, trimesh.Trimesh)]
    if not others:
        return scene
    out = scene.copy()
    for name in others:
        out.delete_geometry(name)
    return out


def world_meshes(scene: trimesh.Scene) -> list[trimesh.Trimesh]:
    """Every triangle mesh instance, moved to world coordinates, visuals kept (trimesh's copies drop the
    colours a material hides in ``visual.vertex_attributes``; they are carried over here)."""
    return [mesh for _, _, mesh in world_instances(scene)]


def world_instances(scene: trimesh.Scene) -> list[tuple[str, str, trimesh.Trimesh]]:
    """(node name, geometry name, mesh in world coordinates) for every triangle mesh instance (see world_meshes)."""
    out = []
    for node in scene.graph.nodes_geometry:
        transform, name = scene.graph[node]
        source = scene.geometry.get(name)
        if not isinstance(source, trimesh.Trimesh):
            continue
        mesh = source.copy()
        mesh.apply_transform(transform)
        hidden = getattr(source.visual, "vertex_attributes", None)
        if hidden and "color" in hidden and hasattr(mesh.visual, "vertex_attributes"):
            mesh.visual.vertex_attributes["color"] = np.asarray(hidden["color"])
        out.append((node, name, mesh))
    return out


def merged(scene: trimesh.Scene, *, colors: bool) -> trimesh.Trimesh:
    """One mesh of all instances. With ``colors``, each part's look becomes vertex colours (textures sampled);
    without, the visuals are dropped. Either way no texture atlas is built, which for large textures costs
    seconds and gigabytes (trimesh's Scene.to_geometry does build one)."""
    meshes = world_meshes(scene)
    rgbas = [vertex_colors(m) for m in meshes] if colors else [None] * len(meshes)
    parts = []
    for mesh, rgba in zip(meshes, rgbas, strict=True):
        plain = trimesh.Trimesh(mesh.vertices, mesh.faces, process=False)
        if any(c is not None for c in rgbas):  # a part without colour of its own is grey; the others keep theirs
            grey = np.tile([180, 180, 180, 255], (len(plain.vertices), 1))
            plain.visual = trimesh.visual.ColorVisuals(plain, vertex_colors=rgba if rgba is not None else grey)
        parts.append(plain)
    return trimesh.util.concatenate(parts) if len(parts) > 1 else parts[0]


def vertex_colors(mesh: trimesh.Trimesh) -> np.ndarray | None:
    """RGBA a vertex: vertex colours (also where a material hid them in vertex_attributes), else the texture or
    material colour sampled at the vertex, else None."""
    visual = mesh.visual
    if visual.kind == "vertex":
        return np.asarray(visual.vertex_colors)
    stored = getattr(visual, "vertex_attributes", {}).get("color")
    if stored is not None and len(stored) == len(mesh.vertices):
        return np.asarray(stored)
    if visual.kind in ("texture", "face") or getattr(visual, "material", None) is not None:
        try:
            return np.asarray(visual.to_color().vertex_colors)
        except Exception:  # an exotic material: geometry without colour rather than a failed export
            return None
    return None


def one_mesh(scene: trimesh.Scene, *, colors: bool = True) -> trimesh.Trimesh:
    """The scene as one mesh in world space, for models that work on a single surface: a lone mesh keeps its
    texture and UVs; several are merged, their looks baked into vertex colours when ``colors`` (one texture atlas
    for all would cost seconds and gigabytes)."""
    meshes = world_meshes(scene)
    if not meshes:
        raise MeshError("the file holds no triangle mesh")
    return meshes[0] if len(meshes) == 1 else merged(scene, colors=colors)


@dataclass(frozen=True)
class Welded:
    vertices: np.ndarray  # (V', 3) one per distinct position
    faces: np.ndarray  # (F, 3) the same faces, in the same order, on the merged vertices
    inverse: np.ndarray  # (V,) each original vertex's merged index

    def mesh(self) -> trimesh.Trimesh:
        return trimesh.Trimesh(self.vertices, self.faces, process=False)


def weld(vertices: np.ndarray, faces: np.ndarray) -> Welded:
    """Vertices at the same position made one (a UV seam or a triangle soup splits them), faces kept in order:
    what adjacency, Laplacians and simplification need. Positions closer than a billionth of the mesh's size
    count as the same."""
    vertices = np.asarray(vertices, dtype=np.float64)
    scale = max(float(np.ptp(vertices, axis=0).max()) if len(vertices) else 1.0, 1e-12)
    unique, inverse = trimesh.grouping.unique_rows(np.round(vertices / scale * 2**30).astype(np.int64))
    return Welded(vertices[unique], inverse[np.asarray(faces, dtype=np.int64)], inverse)
