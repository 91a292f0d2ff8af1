"""STL (binary): geometry only, for printing and CAD."""

from __future__ import annotations

from pathlib import Path

import trimesh

from pocket3d.geometry.meshes import merged
from pocket3d.geometry.orientation import Y_UP_TO_Z_UP


def load(path: Path) -> trimesh.Scene:
    return trimesh.load(str(path), file_type="stl", force="scene", process=False)


def export(scene: trimesh.Scene, dest: Path) -> None:
    """Written Z-up, -Y forward, as STL files are read (Blender's importer and slicers): the Y-up scene turned +90
    degrees about X."""
    mesh = merged(scene, colors=False)
    mesh.apply_transform(Y_UP_TO_Z_UP)
    dest.write_bytes(mesh.export(file_type="stl"))
