"""glTF 2.0: binary (.glb) in and out; JSON (.gltf) with embedded buffers in."""

from __future__ import annotations

from pathlib import Path

import trimesh


def load_glb(path: Path) -> trimesh.Scene:
    return trimesh.load(str(path), file_type="glb", force="scene", process=False)


def load_gltf(path: Path) -> trimesh.Scene:
    return trimesh.load(str(path), file_type="gltf", force="scene", process=False)


def export_glb(scene: trimesh.Scene, dest: Path) -> None:
    dest.write_bytes(scene.export(file_type="glb"))
