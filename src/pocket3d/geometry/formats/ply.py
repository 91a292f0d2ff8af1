"""Stanford PLY (binary), with vertex colours when the mesh has them."""

from __future__ import annotations

from pathlib import Path

import trimesh

from pocket3d.geometry.meshes import merged
from pocket3d.geometry.orientation import Y_UP_TO_Z_UP


def load(path: Path) -> trimesh.Scene:
    return trimesh.load(str(path), file_type="ply", force="scene", process=False)


def export(scene: trimesh.Scene, dest: Path) -> None:
    """Written Z-up, -Y forward, as PLY files are read (Blender's importer): the Y-up scene turned +90
    degrees about X."""
    mesh = merged(scene, colors=True)
    mesh.apply_transform(Y_UP_TO_Z_UP)
    dest.write_bytes(mesh.export(file_type="ply"))
