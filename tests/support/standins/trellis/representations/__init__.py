"""TEST STAND-IN for TRELLIS's representations (upstream trellis/representations/gaussian/gaussian_model.py
``Gaussian`` and trellis/representations/mesh/cube2mesh.py ``MeshExtractResult``): computes nothing real.

Only the attributes ``to_glb`` reads: a mesh's ``vertices`` (float32, (V, 3)) and ``faces`` (int64, (F, 3)) as
tensors on the pipeline's device, in TRELLIS's Z-up frame inside the unit cube; Gaussians' ``_xyz`` and
``_features_dc`` (their colours).
"""

from __future__ import annotations

import numpy as np
import torch
import trimesh


class MeshExtractResult:
    def __init__(self, vertices: torch.Tensor, faces: torch.Tensor, vertex_attrs: torch.Tensor | None = None,
                 res: int = 64) -> None:
        self.vertices, self.faces, self.vertex_attrs, self.res = vertices, faces, vertex_attrs, res
        self.success = vertices.shape[0] != 0 and faces.shape[0] != 0

    @classmethod
    def icosphere(cls, radius: float, device: torch.device) -> MeshExtractResult:
        sphere = trimesh.creation.icosphere(subdivisions=3, radius=radius)
        return cls(torch.tensor(sphere.vertices, dtype=torch.float32, device=device),
                   torch.tensor(sphere.faces, dtype=torch.int64, device=device))


class Gaussian:
    def __init__(self, aabb: list, sh_degree: int = 0) -> None:
        self.aabb, self.sh_degree = aabb, sh_degree

    @classmethod
    def around(cls, radius: float, colour: np.ndarray, device: torch.device) -> Gaussian:
        gs = cls(aabb=[-0.5, -0.5, -0.5, 1.0, 1.0, 1.0])
        points = trimesh.creation.icosphere(subdivisions=2, radius=radius).vertices
        gs._xyz = torch.tensor(points, dtype=torch.float32, device=device)
        gs._features_dc = torch.tensor(np.tile(colour, (len(points), 1)), dtype=torch.float32,
                                       device=device)[:, None, :]
        return gs
