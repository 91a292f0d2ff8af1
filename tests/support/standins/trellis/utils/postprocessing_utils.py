"""TEST STAND-IN for TRELLIS's GLB export (upstream trellis/utils/postprocessing_utils.py ``to_glb``): computes
nothing real.

``to_glb(app_rep, mesh, simplify=0.95, fill_holes=True, fill_holes_max_size=0.04, texture_size=1024, debug=False,
verbose=True) -> trimesh.Trimesh``, as upstream returns it: the mesh turned from Z-up to Y-up, UVs, a
``texture_size`` square base colour texture (here the Gaussians' colour with a gradient, no baking) in a
PBRMaterial with roughness 1 and no metallic factor. It records its arguments (``trellis.to_glb``), with whether
autograd was on: upstream bakes the texture by optimisation.
"""

from __future__ import annotations

import numpy as np
import torch
import trimesh
from PIL import Image
from standin_calls import record


def to_glb(app_rep, mesh, simplify: float = 0.95, fill_holes: bool = True, fill_holes_max_size: float = 0.04,
           texture_size: int = 1024, debug: bool = False, verbose: bool = True) -> trimesh.Trimesh:
    record("trellis.to_glb", simplify=simplify, fill_holes=fill_holes, fill_holes_max_size=fill_holes_max_size,
           texture_size=texture_size, verbose=verbose, grad_enabled=torch.is_grad_enabled(),
           faces=int(mesh.faces.shape[0]))
    vertices = mesh.vertices.cpu().numpy().astype(np.float64)
    faces = mesh.faces.cpu().numpy()
    unit = vertices / np.linalg.norm(vertices, axis=1, keepdims=True)
    uvs = np.column_stack([0.5 + np.arctan2(unit[:, 1], unit[:, 0]) / (2 * np.pi),
                           0.5 + np.arcsin(np.clip(unit[:, 2], -1, 1)) / np.pi])
    colour = app_rep._features_dc.mean(dim=(0, 1)).cpu().numpy()
    shade = np.linspace(0.7, 1.0, texture_size, dtype=np.float32)[:, None, None]
    texture = np.clip(np.broadcast_to(colour, (texture_size, texture_size, 3)) * shade * 255, 0, 255)
    vertices = vertices @ np.array([[1, 0, 0], [0, 0, -1], [0, 1, 0]])  # Z-up to Y-up, as upstream
    material = trimesh.visual.material.PBRMaterial(roughnessFactor=1.0,
                                                   baseColorTexture=Image.fromarray(texture.astype(np.uint8)),
                                                   baseColorFactor=np.array([255, 255, 255, 255], dtype=np.uint8))
    return trimesh.Trimesh(vertices, faces, visual=trimesh.visual.TextureVisuals(uv=uvs, material=material))
