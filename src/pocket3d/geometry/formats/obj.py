"""Wavefront OBJ. Exported as a zip of the OBJ, its MTL and its textures: an OBJ alone loses its materials."""

from __future__ import annotations

import zipfile
from pathlib import Path

import trimesh
from trimesh.exchange.obj import export_obj

from pocket3d.geometry.formats.resolver import NoOtherFiles


def load(path: Path) -> trimesh.Scene:
    # A lone OBJ upload has no MTL beside it; trimesh then keeps the UVs without an image.
    return trimesh.load(str(path), file_type="obj", force="scene", process=False, resolver=NoOtherFiles(path.name))


def export_zip(scene: trimesh.Scene, dest: Path) -> None:
    text, files = export_obj(scene, include_texture=True, return_texture=True, mtl_name="model.mtl")
    with zipfile.ZipFile(dest, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("model.obj", text)
        for name, data in files.items():
            z.writestr(name, data)
