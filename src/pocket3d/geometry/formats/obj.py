"""Wavefront OBJ. Exported as a zip of the OBJ, its MTL and its textures: an OBJ alone loses its materials."""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

import trimesh
from trimesh.exchange.obj import export_obj

from pocket3d.geometry.formats.resolver import NoOtherFiles


# trimesh makes a mesh of every material an OBJ switches to (``usemtl``) and names each by searching the names
# before it: n materials cost n² steps (10,000 took 14 s of CPU, 100,000 hours), in the process reading the file.
MAX_MATERIAL_GROUPS = 1000
_USEMTL = re.compile(rb"^[ \t]*usemtl[ \t]+([^\r\n]*)", re.MULTILINE)


def material_groups(data: bytes) -> int:
    """How many meshes trimesh will make of an OBJ's text: one per distinct material it switches to."""
    return len({name.strip() for name in _USEMTL.findall(data)})


def load(path: Path) -> trimesh.Scene:
    # A lone OBJ upload has no MTL beside it; trimesh then keeps the UVs without an image.
    return trimesh.load(str(path), file_type="obj", force="scene", process=False, resolver=NoOtherFiles(path.name))


def export_zip(scene: trimesh.Scene, dest: Path) -> None:
    text, files = export_obj(scene, include_texture=True, return_texture=True, mtl_name="model.mtl")
    with zipfile.ZipFile(dest, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("model.obj", text)
        for name, data in files.items():
            z.writestr(name, data)
