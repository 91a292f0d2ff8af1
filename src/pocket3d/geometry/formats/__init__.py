"""Mesh formats: one module per format, and this table from format name to loader and exporter.

A loader reads a file into a ``trimesh.Scene``; an exporter writes a scene to a file; ``convert_glb``, where a
format has one, converts a GLB file as it is (keeping what a trimesh scene cannot hold: skins, armatures). A
format that cannot be written here says why (``unavailable``), so a request for it is refused up front with
FORMAT_UNAVAILABLE.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import trimesh

from pocket3d.formats import KEEPS
from pocket3d.geometry.formats import fbx, gltf, json, obj, ply, stl, usdz

Loader = Callable[[Path], trimesh.Scene]
Exporter = Callable[[trimesh.Scene, Path], None]
Converter = Callable[[Path, Path], None]


@dataclass(frozen=True)
class MeshFormat:
    name: str
    suffix: str  # of the file an export writes
    media_type: str
    loader: Loader | None
    exporter: Exporter | None
    unavailable_reason: Callable[[], str | None] = lambda: None  # why it cannot be written here, if it cannot
    convert_glb: Converter | None = None

    @property
    def unavailable(self) -> str | None:
        return self.unavailable_reason() if self.exporter is not None else self.unavailable_reason() or "no writer"


FORMATS: dict[str, MeshFormat] = {
    "glb": MeshFormat("glb", ".glb", "model/gltf-binary", gltf.load_glb, gltf.export_glb),
    "gltf": MeshFormat("gltf", ".gltf", "model/gltf+json", gltf.load_gltf, None,
                       lambda: "write glb: the same glTF in one self-contained file"),
    "obj": MeshFormat("obj", ".obj.zip", "application/zip", obj.load, obj.export_zip),
    "ply": MeshFormat("ply", ".ply", "application/ply", ply.load, ply.export),
    "stl": MeshFormat("stl", ".stl", "model/stl", stl.load, stl.export),
    "json": MeshFormat("json", ".json", "application/json", None, json.export),
    "fbx": MeshFormat("fbx", ".fbx", "application/octet-stream", fbx.load, fbx.export, fbx.unavailable_reason,
                      fbx.convert_glb),
    "usdz": MeshFormat("usdz", ".usdz", "model/vnd.usdz+zip", None, usdz.export, usdz.unavailable_reason),
}


# What each writer keeps of a result is declared in pocket3d.formats (the API's schemas read it there); it must
# name exactly the formats that have a writer here.
if {name for name, f in FORMATS.items() if f.exporter is not None} != set(KEEPS):
    raise ImportError(f"pocket3d.formats.KEEPS names {sorted(KEEPS)}; the writers here are "
                      f"{sorted(name for name, f in FORMATS.items() if f.exporter is not None)}")


def format_of(path: Path) -> MeshFormat | None:
    """The format of a file pocket3d wrote, by its suffix (``model.obj.zip`` is obj)."""
    for fmt in sorted(FORMATS.values(), key=lambda f: -len(f.suffix)):
        if path.name.endswith(fmt.suffix):
            return fmt
    return None


def unavailable_formats() -> dict[str, str]:
    return {name: reason for name, f in FORMATS.items() if (reason := f.unavailable)}
