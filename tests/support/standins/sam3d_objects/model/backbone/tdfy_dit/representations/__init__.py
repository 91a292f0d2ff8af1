"""TEST STAND-IN for SAM 3D Objects' decoded representations (upstream
sam3d_objects/model/backbone/tdfy_dit/representations/mesh/cube2mesh.py ``MeshExtractResult`` and
representations/gaussian/gaussian_model.py ``Gaussian``): computes nothing real.

Only what ``to_glb`` and the adapter read: a mesh's ``vertices`` (float32, (V, 3)), ``faces`` (int64, (F, 3)) and
``vertex_attrs`` ((V, 6): colour then normal, as the FlexiCubes decoder leaves them) as tensors, Z-up inside the
unit cube; the Gaussians' ``_xyz``, ``_features_dc`` (their colours) and ``save_ply(path)``, which writes the
upstream PLY layout (x, y, z, nx, ny, nz, f_dc_0..2, opacity, scale_0..2, rot_0..3, little-endian float32).
"""

from __future__ import annotations

import numpy as np
import torch
import trimesh

PLY_FIELDS = ("x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2", "opacity",
              "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3")


class MeshExtractResult:
    def __init__(self, vertices: torch.Tensor, faces: torch.Tensor, vertex_attrs: torch.Tensor | None = None,
                 res: int = 64) -> None:
        self.vertices, self.faces, self.vertex_attrs, self.res = vertices, faces.long(), vertex_attrs, res
        self.success = vertices.shape[0] != 0 and faces.shape[0] != 0

    @classmethod
    def ellipsoid(cls, radii: np.ndarray, colour: np.ndarray) -> MeshExtractResult:
        sphere = trimesh.creation.icosphere(subdivisions=3, radius=1.0)
        vertices = sphere.vertices * radii
        attrs = np.column_stack([np.tile(colour, (len(vertices), 1)), sphere.vertex_normals])
        return cls(torch.tensor(vertices, dtype=torch.float32), torch.tensor(sphere.faces, dtype=torch.int64),
                   torch.tensor(attrs, dtype=torch.float32))


class Gaussian:
    def __init__(self, aabb: list, sh_degree: int = 0) -> None:
        self.aabb, self.sh_degree = aabb, sh_degree

    @classmethod
    def around(cls, radii: np.ndarray, colour: np.ndarray) -> Gaussian:
        gs = cls(aabb=[-0.5, -0.5, -0.5, 1.0, 1.0, 1.0])
        points = trimesh.creation.icosphere(subdivisions=2, radius=1.0).vertices * radii
        gs._xyz = torch.tensor(points, dtype=torch.float32)
        gs._features_dc = torch.tensor(np.tile(colour, (len(points), 1)), dtype=torch.float32)[:, None, :]
        return gs

    @property
    def get_xyz(self) -> torch.Tensor:
        return self._xyz

    def save_ply(self, path: str) -> None:
        xyz = self._xyz.detach().cpu().numpy()
        n = len(xyz)
        columns = [xyz, np.zeros((n, 3)), self._features_dc[:, 0, :].detach().cpu().numpy(), np.full((n, 1), 2.0),
                   np.full((n, 3), -4.0), np.tile([1.0, 0.0, 0.0, 0.0], (n, 1))]
        data = np.concatenate(columns, axis=1).astype("<f4")
        header = "ply\nformat binary_little_endian 1.0\n" + f"element vertex {n}\n" + "".join(
            f"property float {name}\n" for name in PLY_FIELDS) + "end_header\n"
        with open(path, "wb") as f:
            f.write(header.encode("ascii"))
            f.write(data.tobytes())
