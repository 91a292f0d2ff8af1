"""Stanford PLY (binary), with vertex colours when the mesh has them."""

from __future__ import annotations

from pathlib import Path

import trimesh

from pocket3d.geometry.meshes import merged


def load(path: Path) -> trimesh.Scene:
    return trimesh.load(str(path), file_type="ply", force="scene", process=False)


def export(scene: trimesh.Scene, dest: Path) -> None:
    dest.write_bytes(merged(scene, colors=True).export(file_type="ply"))
