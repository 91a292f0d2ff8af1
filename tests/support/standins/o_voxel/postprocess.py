"""TEST STAND-IN for O-Voxel's GLB export (upstream o-voxel/o_voxel/postprocess.py ``to_glb``): computes nothing
real.

``to_glb(vertices, faces, attr_volume, coords, attr_layout, aabb, voxel_size=None, grid_size=None,
decimation_target=1000000, texture_size=2048, remesh=False, remesh_band=1, remesh_project=0.9, ..., verbose=False,
use_tqdm=False) -> trimesh.Trimesh``, returned as upstream returns it: no remeshing, decimation or baking, but the
same output: the mesh turned from Z-up to Y-up with vertex normals and UVs, a ``texture_size`` square base colour
+ alpha texture (the voxels' mean base colour) and a metallic-roughness texture (G roughness, B metallic) in a
PBRMaterial with metallic and roughness factors 1, OPAQUE, double-sided unless remeshed. It refuses to run
without ``voxel_size`` or ``grid_size``, as upstream asserts. Calls are recorded (``o_voxel.to_glb``).
"""

from __future__ import annotations

import numpy as np
import torch
import trimesh
from PIL import Image
from standin_calls import record

RIGHT_ANGLE = np.radians(90.0)


def to_glb(vertices: torch.Tensor, faces: torch.Tensor, attr_volume: torch.Tensor, coords: torch.Tensor,
           attr_layout: dict, aabb, voxel_size=None, grid_size=None, decimation_target: int = 1000000,
           texture_size: int = 2048, remesh: bool = False, remesh_band: float = 1, remesh_project: float = 0.9,
           mesh_cluster_threshold_cone_half_angle_rad=RIGHT_ANGLE, mesh_cluster_refine_iterations=0,
           mesh_cluster_global_iterations=1, mesh_cluster_smooth_strength=1, verbose: bool = False,
           use_tqdm: bool = False) -> trimesh.Trimesh:
    record("o_voxel.to_glb", faces=int(faces.shape[0]), voxels=int(coords.shape[0]), aabb=np.asarray(aabb).tolist(),
           voxel_size=voxel_size, grid_size=grid_size, decimation_target=decimation_target,
           texture_size=texture_size, remesh=remesh, remesh_band=remesh_band, remesh_project=remesh_project,
           layout=sorted(attr_layout))
    assert voxel_size is not None or grid_size is not None, "Either voxel_size or grid_size must be provided"
    v = vertices.cpu().numpy().astype(np.float64)
    f = faces.cpu().numpy().astype(np.int64)
    attrs = attr_volume.cpu().numpy()
    base = np.clip(attrs[:, attr_layout["base_color"]].mean(axis=0) * 255, 0, 255)
    alpha = np.clip(attrs[:, attr_layout["alpha"]].mean() * 255, 0, 255)
    metallic = np.clip(attrs[:, attr_layout["metallic"]].mean() * 255, 0, 255)
    roughness = np.clip(attrs[:, attr_layout["roughness"]].mean() * 255, 0, 255)
    colour = np.empty((texture_size, texture_size, 4), np.uint8)
    colour[..., :3], colour[..., 3] = base.astype(np.uint8), np.uint8(alpha)
    packed = np.zeros((texture_size, texture_size, 3), np.uint8)
    packed[..., 1], packed[..., 2] = np.uint8(roughness), np.uint8(metallic)
    material = trimesh.visual.material.PBRMaterial(
        baseColorTexture=Image.fromarray(colour), baseColorFactor=np.array([255, 255, 255, 255], dtype=np.uint8),
        metallicRoughnessTexture=Image.fromarray(packed), metallicFactor=1.0, roughnessFactor=1.0,
        alphaMode="OPAQUE", doubleSided=not remesh)
    unit = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
    uvs = np.column_stack([0.5 + np.arctan2(unit[:, 1], unit[:, 0]) / (2 * np.pi),
                           0.5 + np.arcsin(np.clip(unit[:, 2], -1, 1)) / np.pi])
    normals = trimesh.Trimesh(v, f, process=False).vertex_normals
    v = np.column_stack([v[:, 0], v[:, 2], -v[:, 1]])  # Z-up to Y-up, as upstream
    normals = np.column_stack([normals[:, 0], normals[:, 2], -normals[:, 1]])
    return trimesh.Trimesh(vertices=v, faces=f, vertex_normals=normals, process=False,
                           visual=trimesh.visual.TextureVisuals(uv=uvs, material=material))
