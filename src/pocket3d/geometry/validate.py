"""Loading a mesh for use: it must parse, hold triangles, have finite coordinates and in-range indices, and
stay under the configured size limits. Every model sees only meshes that passed."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import trimesh

from pocket3d.errors import ErrorCode
from pocket3d.geometry.errors import MeshError
from pocket3d.geometry.formats import FORMATS


@dataclass(frozen=True)
class MeshLimits:
    max_faces: int = 2_000_000
    max_vertices: int = 2_000_000


LOADABLE = frozenset(name for name, f in FORMATS.items() if f.loader is not None)


def load_scene(path: Path, fmt: str, limits: MeshLimits = MeshLimits()) -> trimesh.Scene:
    spec = FORMATS.get(fmt)
    if spec is None or spec.loader is None:
        raise MeshError(f"{fmt.upper()} files cannot be read here")
    try:
        scene = spec.loader(path)
    except Exception as e:  # trimesh raises many types for malformed files
        raise MeshError(f"the {fmt.upper()} file does not parse: {_short(e)}") from None
    check(scene, limits)
    return scene


def check(scene: trimesh.Scene, limits: MeshLimits) -> None:
    meshes = [g for g in scene.geometry.values() if isinstance(g, trimesh.Trimesh)]
    faces = sum(len(g.faces) for g in meshes)
    vertices = sum(len(g.vertices) for g in meshes)
    if faces == 0:
        raise MeshError("the file holds no triangles")
    if faces > limits.max_faces or vertices > limits.max_vertices:
        raise MeshError(f"the mesh has {faces} faces and {vertices} vertices; at most {limits.max_faces} faces "
                        f"and {limits.max_vertices} vertices are accepted", ErrorCode.MESH_TOO_LARGE,
                        {"faces": faces, "vertices": vertices, "max_faces": limits.max_faces,
                         "max_vertices": limits.max_vertices})
    for g in meshes:
        if not np.isfinite(g.vertices).all():
            raise MeshError("the mesh has non-finite vertex coordinates (NaN or infinity)")
        if len(g.faces) and (g.faces.min() < 0 or g.faces.max() >= len(g.vertices)):
            raise MeshError("face indices point past the vertex list")


def _short(e: Exception) -> str:
    text = str(e) or type(e).__name__
    return text if len(text) <= 200 else text[:200] + "…"
