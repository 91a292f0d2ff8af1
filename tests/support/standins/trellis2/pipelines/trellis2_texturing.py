"""TEST STAND-IN for TRELLIS.2's texturing pipeline (upstream trellis2/pipelines/trellis2_texturing.py): computes
nothing real.

``Trellis2TexturingPipeline.run(mesh: trimesh.Trimesh, image, seed=42, tex_slat_sampler_params={},
preprocess_image=True, resolution=1024, texture_size=2048) -> trimesh.Trimesh``, with upstream's frames:
``preprocess_mesh`` centres the mesh on its bounding box, scales its longest side to 0.99999 and turns it from
Y-up to Z-up; the texture sampler runs once; the result keeps the mesh's UVs when it has any (else gets new ones),
is turned back to Y-up (still in the unit frame, as upstream returns it) and carries a PBR material: a
``texture_size`` base colour (+ alpha) texture in the image's mean colour and a metallic-roughness texture.
"""

from __future__ import annotations

import numpy as np
import torch
import trimesh
from PIL import Image
from standin_calls import record

from trellis2 import FAIL_SEED
from trellis2.pipelines.base import Pipeline, describe, mean_colour


class Trellis2TexturingPipeline(Pipeline):
    sampler_names = ("tex_slat_sampler",)

    def preprocess_mesh(self, mesh: trimesh.Trimesh) -> trimesh.Trimesh:
        vertices = np.asarray(mesh.vertices, dtype=np.float64)
        low, high = vertices.min(axis=0), vertices.max(axis=0)
        vertices = (vertices - (low + high) / 2) * (0.99999 / (high - low).max())
        vertices = np.column_stack([vertices[:, 0], -vertices[:, 2], vertices[:, 1]])  # Y-up to Z-up
        assert np.all(vertices >= -0.5) and np.all(vertices <= 0.5), "vertices out of range"
        return trimesh.Trimesh(vertices=vertices, faces=mesh.faces, process=False)

    @torch.no_grad()
    def run(self, mesh: trimesh.Trimesh, image: Image.Image, seed: int = 42,
            tex_slat_sampler_params: dict = {}, preprocess_image: bool = True,  # noqa: B006 (upstream's)
            resolution: int = 1024, texture_size: int = 2048) -> trimesh.Trimesh:
        uv = getattr(mesh.visual, "uv", None)
        record("trellis2.texturing.run", faces=len(mesh.faces), has_uv=uv is not None, bounds=mesh.bounds.tolist(),
               image=describe(image), seed=seed, tex_slat_sampler_params=tex_slat_sampler_params,
               preprocess_image=preprocess_image, resolution=resolution, texture_size=texture_size)
        if seed == FAIL_SEED:
            raise RuntimeError(f"TEST STAND-IN for TRELLIS.2 texturing: failure requested by seed {FAIL_SEED}")
        if preprocess_image:
            image = self.preprocess_image(image)
        unit = self.preprocess_mesh(mesh)
        torch.manual_seed(seed)
        self.tex_slat_sampler.sample(None, torch.randn(64, 8), None,
                                     **{**self.tex_slat_sampler_params, **tex_slat_sampler_params},
                                     tqdm_desc="Sampling texture SLat")
        vertices = np.asarray(unit.vertices).copy()
        if uv is None:  # upstream unwraps with cumesh; a planar projection stands in for it
            span = np.ptp(vertices[:, :2], axis=0)
            uv = (vertices[:, :2] - vertices[:, :2].min(axis=0)) / np.where(span > 0, span, 1)
        colour = mean_colour(image)
        base = np.empty((texture_size, texture_size, 4), np.uint8)
        base[..., :3], base[..., 3] = np.clip(colour * 255, 0, 255).astype(np.uint8), 255
        metallic_roughness = np.zeros((texture_size, texture_size, 3), np.uint8)
        metallic_roughness[..., 1], metallic_roughness[..., 2] = 153, 25  # roughness 0.6, metallic 0.1
        material = trimesh.visual.material.PBRMaterial(
            baseColorTexture=Image.fromarray(base), baseColorFactor=np.array([255, 255, 255, 255], np.uint8),
            metallicRoughnessTexture=Image.fromarray(metallic_roughness), metallicFactor=1.0, roughnessFactor=1.0,
            alphaMode="OPAQUE", doubleSided=True)
        vertices = np.column_stack([vertices[:, 0], vertices[:, 2], -vertices[:, 1]])  # Z-up back to Y-up
        normals = trimesh.Trimesh(vertices, unit.faces, process=False).vertex_normals
        return trimesh.Trimesh(vertices=vertices, faces=unit.faces, vertex_normals=normals, process=False,
                               visual=trimesh.visual.TextureVisuals(uv=np.asarray(uv), material=material))
