"""Mesh formats: one table from extension to loader and exporter.

This first cut covers what trimesh writes faithfully (GLB, OBJ, PLY, STL); FBX and USDZ are listed with the
reason they are not available yet, so a request for them is refused up front with FORMAT_UNAVAILABLE.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import trimesh


class MeshError(Exception):
    """A mesh file that does not parse or holds no usable geometry."""


@dataclass(frozen=True)
class MeshFormat:
    ext: str
    media_type: str
    exporter: Callable[[trimesh.Scene, Path], None] | None
    unavailable: str | None = None


def _trimesh_exporter(file_type: str) -> Callable[[trimesh.Scene, Path], None]:
    def export(scene: trimesh.Scene, dest: Path) -> None:
        target = scene if file_type in ("glb", "obj") else scene.to_geometry()
        data = target.export(file_type=file_type)
        dest.write_bytes(data if isinstance(data, bytes) else data.encode())
    return export


FORMATS: dict[str, MeshFormat] = {
    "glb": MeshFormat("glb", "model/gltf-binary", _trimesh_exporter("glb")),
    "obj": MeshFormat("obj", "model/obj", _trimesh_exporter("obj")),
    "ply": MeshFormat("ply", "application/ply", _trimesh_exporter("ply")),
    "stl": MeshFormat("stl", "model/stl", _trimesh_exporter("stl")),
    "fbx": MeshFormat("fbx", "application/octet-stream", None, "FBX export needs Blender's bpy, not set up yet"),
    "usdz": MeshFormat("usdz", "model/vnd.usdz+zip", None, "USDZ export is not implemented yet"),
}

# Formats trimesh reads; FBX is accepted as input for rigging models that read it themselves.
LOADABLE = {"glb", "gltf", "obj", "ply", "stl"}


def load_scene(path: Path, file_type: str) -> trimesh.Scene:
    try:
        loaded = trimesh.load(str(path), file_type=file_type, force="scene", process=False)
    except Exception as e:  # trimesh raises many types for malformed files
        raise MeshError(f"the {file_type.upper()} file does not parse: {e}") from None
    geoms = [g for g in loaded.geometry.values() if isinstance(g, trimesh.Trimesh)]
    if not geoms or sum(len(g.faces) for g in geoms) == 0:
        raise MeshError("the file holds no triangles")
    for g in geoms:
        if not np.isfinite(g.vertices).all():
            raise MeshError("the mesh has non-finite vertex coordinates")
        if len(g.faces) and (g.faces.min() < 0 or g.faces.max() >= len(g.vertices)):
            raise MeshError("face indices point past the vertex list")
    return loaded


def export_scene(scene: trimesh.Scene, fmt: str, dest: Path) -> None:
    spec = FORMATS.get(fmt)
    if spec is None or spec.exporter is None:
        raise MeshError(spec.unavailable if spec else f"unknown format {fmt!r}")
    spec.exporter(scene, dest)


def unavailable_formats() -> dict[str, str]:
    return {k: f.unavailable for k, f in FORMATS.items() if f.unavailable}
