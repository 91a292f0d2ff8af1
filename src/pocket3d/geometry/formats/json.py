"""A plain JSON mesh for clients without a mesh library (the TRELLIS.2 server's Rust client reads this shape):
``{"vertices": [[x, y, z], ...], "faces": [[a, b, c], ...], "vertex_colors": [[r, g, b, a], ...]?,
"normals": [[x, y, z], ...]?}``, all geometry of the scene in world coordinates, colours 0-255."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import trimesh

from pocket3d.geometry.meshes import merged


def export(scene: trimesh.Scene, dest: Path) -> None:
    mesh = merged(scene, colors=True)
    body: dict[str, list] = {
        "vertices": np.round(mesh.vertices, 6).tolist(),
        "faces": mesh.faces.astype(int).tolist(),
        "normals": np.round(mesh.vertex_normals, 5).tolist(),
    }
    if mesh.visual.kind == "vertex":
        body["vertex_colors"] = np.asarray(mesh.visual.vertex_colors, dtype=int).tolist()
    dest.write_text(json.dumps(body, separators=(",", ":")))
