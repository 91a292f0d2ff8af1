"""glTF 2.0: binary (.glb) in and out; JSON (.gltf) with embedded buffers in."""

from __future__ import annotations

import json
import struct
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import trimesh

from pocket3d.geometry.formats.resolver import NoOtherFiles


def load_glb(path: Path) -> trimesh.Scene:
    return trimesh.load(str(path), file_type="glb", force="scene", process=False, resolver=NoOtherFiles())


def load_gltf(path: Path) -> trimesh.Scene:
    return trimesh.load(str(path), file_type="gltf", force="scene", process=False, resolver=NoOtherFiles())


# Bytes a component takes, and components an element has, by glTF's accessor componentType and type.
_COMPONENT_BYTES = {5120: 1, 5121: 1, 5122: 2, 5123: 2, 5125: 4, 5126: 4}
_COMPONENTS = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4, "MAT2": 4, "MAT3": 9, "MAT4": 16}


@dataclass(frozen=True)
class Declared:
    """What a glTF's JSON says trimesh will build, read before it builds anything."""

    nodes: int  # scene graph nodes: the file's, plus one per primitive of each node's mesh of several
    primitives: int  # over all meshes: trimesh makes a geometry of each
    # Bytes trimesh allocates for accessors by their declared count alone: those without a bufferView (sparse, or
    # left for an extension to fill) are zeros of that size, strided ones a copy; the others are views of the file.
    allocated_bytes: int


def declared(path: Path | IO[bytes], fmt: str) -> Declared | None:
    """The sizes the file's JSON declares (a million nodes or primitives take trimesh minutes and gigabytes, a
    sparse accessor of a billion elements as many bytes); None when the JSON cannot be read (trimesh says why)."""
    try:
        with open(path, "rb") if isinstance(path, Path) else nullcontext(path) as f:
            if fmt == "glb":
                magic, _, _, length, kind = struct.unpack("<4sIIII", f.read(20))
                if magic != b"glTF" or kind != 0x4E4F534A:  # "JSON"
                    return None
                tree = json.loads(f.read(length))
            else:
                tree = json.load(f)
        nodes, meshes = _list(tree, "nodes"), _list(tree, "meshes")
        views = _list(tree, "bufferViews")
        primitives = [len(_list(m, "primitives")) for m in meshes]
        placed = 0
        for node in nodes:
            mesh = node.get("mesh") if isinstance(node, dict) else None
            if isinstance(mesh, int) and 0 <= mesh < len(primitives) and primitives[mesh] > 1:
                placed += primitives[mesh]
        allocated = 0
        for accessor in _list(tree, "accessors"):
            if not isinstance(accessor, dict):
                continue
            view = accessor.get("bufferView")
            strided = isinstance(view, int) and 0 <= view < len(views) and isinstance(views[view], dict) \
                and "byteStride" in views[view]
            count = accessor.get("count")
            if (view is None or strided) and isinstance(count, int) and count > 0:
                allocated += count * _COMPONENTS.get(str(accessor.get("type")), 1) \
                    * _COMPONENT_BYTES.get(int(accessor.get("componentType") or 0), 4)
        return Declared(len(nodes) + placed, sum(primitives), allocated)
    except (OSError, ValueError, struct.error, AttributeError, TypeError):
        return None


def _list(tree: object, key: str) -> list:
    value = tree.get(key, []) if isinstance(tree, dict) else []
    return value if isinstance(value, list) else []


def export_glb(scene: trimesh.Scene, dest: Path) -> None:
    dest.write_bytes(scene.export(file_type="glb"))
