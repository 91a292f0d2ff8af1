"""TEST STAND-IN for TRELLIS.2's ``MeshWithVoxel`` (upstream trellis2/representations/mesh/base.py): computes
nothing real. The attributes ``o_voxel.postprocess.to_glb`` is given in upstream's example.py: ``vertices``
(float32), ``faces`` (int32), ``coords`` (voxel indices), ``attrs`` (PBR attributes per voxel), ``layout`` (their
slices), ``voxel_size``; plus ``origin`` and ``voxel_shape``."""

from __future__ import annotations

import torch


class MeshWithVoxel:
    def __init__(self, vertices: torch.Tensor, faces: torch.Tensor, origin: list, voxel_size: float,
                 coords: torch.Tensor, attrs: torch.Tensor, voxel_shape: torch.Size,
                 layout: dict = {}) -> None:  # noqa: B006 (upstream's default)
        self.vertices = vertices.float()
        self.faces = faces.int()
        self.origin = torch.tensor(origin, dtype=torch.float32)
        self.voxel_size = voxel_size
        self.coords = coords
        self.attrs = attrs
        self.voxel_shape = voxel_shape
        self.layout = layout

    @property
    def device(self) -> torch.device:
        return self.vertices.device
