"""glTF 2.0: binary (.glb) in and out; JSON (.gltf) with embedded buffers in."""

from __future__ import annotations

import json
import struct
from contextlib import nullcontext
from pathlib import Path
from typing import IO

import trimesh

from pocket3d.geometry.formats.resolver import NoOtherFiles


def load_glb(path: Path) -> trimesh.Scene:
    return trimesh.load(str(path), file_type="glb", force="scene", process=False, resolver=NoOtherFiles())


def load_gltf(path: Path) -> trimesh.Scene:
    return trimesh.load(str(path), file_type="gltf", force="scene", process=False, resolver=NoOtherFiles())


def declared_nodes(path: Path | IO[bytes], fmt: str) -> int | None:
    """How many nodes the file's JSON declares, read before trimesh builds a scene graph of them (a million
    nodes take trimesh seconds and gigabytes); None when the JSON cannot be read (trimesh says why)."""
    try:
        with open(path, "rb") if isinstance(path, Path) else nullcontext(path) as f:
            if fmt == "glb":
                magic, _, _, length, kind = struct.unpack("<4sIIII", f.read(20))
                if magic != b"glTF" or kind != 0x4E4F534A:  # "JSON"
                    return None
                tree = json.loads(f.read(length))
            else:
                tree = json.load(f)
        nodes = tree.get("nodes", [])
        return len(nodes) if isinstance(nodes, list) else None
    except (OSError, ValueError, struct.error, AttributeError):
        return None


def export_glb(scene: trimesh.Scene, dest: Path) -> None:
    dest.write_bytes(scene.export(file_type="glb"))
