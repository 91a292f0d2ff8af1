"""TEST STAND-IN for SAM 3D Objects' GLB export (upstream
sam3d_objects/model/backbone/tdfy_dit/utils/postprocessing_utils.py ``to_glb``): computes nothing real.

``to_glb(app_rep, mesh, simplify=0.95, fill_holes=True, fill_holes_max_size=0.04, texture_size=1024, debug=False,
verbose=True, with_mesh_postprocess=True, with_texture_baking=True, use_vertex_color=False,
rendering_engine="nvdiffrast") -> trimesh.Trimesh``, shaped as upstream returns it: turned from Z-up to Y-up;
with texture baking, UVs and a ``texture_size`` square base colour texture (here the Gaussians' colour with a
gradient, nothing rendered) in a PBRMaterial with roughness 1 and no metallic factor; without post-processing and
baking but with ``use_vertex_color``, the decoder's vertex colours; otherwise no visual at all. It records its
arguments (``sam3d.to_glb``) and whether autograd was on: upstream bakes the texture by optimisation.
"""

from __future__ import annotations

import numpy as np
import torch
import trimesh
from PIL import Image
from standin_calls import record


def to_glb(app_rep, mesh, simplify: float = 0.95, fill_holes: bool = True, fill_holes_max_size: float = 0.04,
           texture_size: int = 1024, debug: bool = False, verbose: bool = True, with_mesh_postprocess=True,
           with_texture_baking=True, use_vertex_color=False, rendering_engine: str = "nvdiffrast") -> trimesh.Trimesh:
    record("sam3d.to_glb", simplify=simplify, fill_holes=fill_holes, texture_size=texture_size, verbose=verbose,
           with_mesh_postprocess=with_mesh_postprocess, with_texture_baking=with_texture_baking,
           use_vertex_color=use_vertex_color, rendering_engine=rendering_engine,
           grad_enabled=torch.is_grad_enabled(), faces=int(mesh.faces.shape[0]))
    vertices = mesh.vertices.float().cpu().numpy().astype(np.float64)
    faces = mesh.faces.cpu().numpy()
    vertex_colours = mesh.vertex_attrs[:, :3].cpu().numpy()
    material = uvs = None
    if with_texture_baking:
        unit = vertices / np.linalg.norm(vertices, axis=1, keepdims=True)
        uvs = np.column_stack([0.5 + np.arctan2(unit[:, 1], unit[:, 0]) / (2 * np.pi),
                               0.5 + np.arcsin(np.clip(unit[:, 2], -1, 1)) / np.pi])
        colour = app_rep._features_dc.mean(dim=(0, 1)).cpu().numpy()
        shade = np.linspace(0.7, 1.0, texture_size, dtype=np.float32)[:, None, None]
        texture = np.clip(np.broadcast_to(colour, (texture_size, texture_size, 3)) * shade * 255, 0, 255)
        material = trimesh.visual.material.PBRMaterial(
            roughnessFactor=1.0, baseColorTexture=Image.fromarray(texture.astype(np.uint8)),
            baseColorFactor=np.array([255, 255, 255, 255], dtype=np.uint8))
    vertices = vertices @ np.array([[1, 0, 0], [0, 0, -1], [0, 1, 0]])  # Z-up to Y-up, as upstream
    if not with_mesh_postprocess and not with_texture_baking and use_vertex_color:
        out = trimesh.Trimesh(vertices=vertices, faces=faces, process=False)
        out.visual.vertex_colors = (np.clip(vertex_colours, 0, 1) * 255).astype(np.uint8)
        return out
    visual = trimesh.visual.TextureVisuals(uv=uvs, material=material) if with_texture_baking else None
    return trimesh.Trimesh(vertices, faces, visual=visual)
