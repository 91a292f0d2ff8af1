"""TEST STAND-IN for TRELLIS.2's image-to-3D pipeline (upstream trellis2/pipelines/trellis2_image_to_3d.py):
computes nothing real.

``Trellis2ImageTo3DPipeline.run(image, num_samples=1, seed=42, sparse_structure_sampler_params={},
shape_slat_sampler_params={}, tex_slat_sampler_params={}, preprocess_image=True, return_latent=False,
pipeline_type=None, max_num_tokens=49152) -> list[MeshWithVoxel]``, with upstream's pipeline types ("512",
"1024", "1024_cascade", "1536_cascade"; anything else is a ValueError) and stages: the sparse-structure sampler
once, the shape sampler once (twice for a cascade), the texture sampler once, each over pipeline.json's
parameters. The result is an icosphere in TRELLIS.2's Z-up unit cube with voxels around its surface whose PBR
attributes hold the image's mean colour, metallic 0.1, roughness 0.6, alpha 1.
"""

from __future__ import annotations

import numpy as np
import torch
import trimesh
from PIL import Image
from standin_calls import record

from trellis2 import FAIL_SEED
from trellis2.pipelines.base import Pipeline, describe, mean_colour
from trellis2.representations import MeshWithVoxel

RESOLUTIONS = {"512": 512, "1024": 1024, "1024_cascade": 1024, "1536_cascade": 1536}


class Trellis2ImageTo3DPipeline(Pipeline):
    sampler_names = ("sparse_structure_sampler", "shape_slat_sampler", "tex_slat_sampler")

    def __init__(self, args: dict) -> None:
        super().__init__(args)
        self.default_pipeline_type = args.get("default_pipeline_type", "1024_cascade")

    @torch.no_grad()
    def run(self, image: Image.Image, num_samples: int = 1, seed: int = 42,
            sparse_structure_sampler_params: dict = {}, shape_slat_sampler_params: dict = {},  # noqa: B006
            tex_slat_sampler_params: dict = {}, preprocess_image: bool = True,  # noqa: B006 (upstream's)
            return_latent: bool = False, pipeline_type: str | None = None,
            max_num_tokens: int = 49152) -> list[MeshWithVoxel]:
        record("trellis2.run", image=describe(image), num_samples=num_samples, seed=seed,
               sparse_structure_sampler_params=sparse_structure_sampler_params,
               shape_slat_sampler_params=shape_slat_sampler_params,
               tex_slat_sampler_params=tex_slat_sampler_params, preprocess_image=preprocess_image,
               pipeline_type=pipeline_type, max_num_tokens=max_num_tokens)
        pipeline_type = pipeline_type or self.default_pipeline_type
        if pipeline_type not in RESOLUTIONS:
            raise ValueError(f"Invalid pipeline type: {pipeline_type}")
        if seed == FAIL_SEED:
            raise RuntimeError(f"TEST STAND-IN for TRELLIS.2: failure requested by seed {FAIL_SEED}")
        if preprocess_image:
            image = self.preprocess_image(image)
        torch.manual_seed(seed)
        noise = torch.randn(num_samples, 8, 16, 16, 16)
        self.sparse_structure_sampler.sample(None, noise, None, **{**self.sparse_structure_sampler_params,
                                                                    **sparse_structure_sampler_params})
        for _ in range(2 if pipeline_type.endswith("cascade") else 1):
            self.shape_slat_sampler.sample(None, torch.randn(64, 8), None,
                                           **{**self.shape_slat_sampler_params, **shape_slat_sampler_params},
                                           tqdm_desc="Sampling shape SLat")
        self.tex_slat_sampler.sample(None, torch.randn(64, 8), None,
                                     **{**self.tex_slat_sampler_params, **tex_slat_sampler_params},
                                     tqdm_desc="Sampling texture SLat")
        resolution = RESOLUTIONS[pipeline_type]
        colour = mean_colour(image)
        out = [self._mesh(0.3 + 0.1 * (seed % 7) / 7, resolution, colour) for _ in range(num_samples)]
        return (out, (None, None, resolution)) if return_latent else out

    def _mesh(self, radius: float, resolution: int, colour: np.ndarray) -> MeshWithVoxel:
        sphere = trimesh.creation.icosphere(subdivisions=3, radius=radius)
        coords = np.unique(np.floor((sphere.vertices + 0.5) * resolution).astype(np.int64), axis=0)
        attrs = np.zeros((len(coords), 6), np.float32)
        attrs[:, 0:3], attrs[:, 3], attrs[:, 4], attrs[:, 5] = colour, 0.1, 0.6, 1.0
        return MeshWithVoxel(torch.tensor(sphere.vertices, dtype=torch.float32),
                             torch.tensor(sphere.faces, dtype=torch.int32), origin=[-0.5, -0.5, -0.5],
                             voxel_size=1 / resolution, coords=torch.tensor(coords, dtype=torch.int32),
                             attrs=torch.tensor(attrs), voxel_shape=torch.Size([1, 6, resolution, resolution,
                                                                                resolution]),
                             layout=self.pbr_attr_layout)
