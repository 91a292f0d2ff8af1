"""TEST STAND-IN for PartField's ``partfield/model_trainer_pvcnn_only_demo.py``: computes nothing real.

Upstream ``Model(cfg)`` is a LightningModule whose ``predict_step`` runs ``planes =
self.triplane_transformer(self.pvcnn(pc, pc))`` on a (1, 100000, 3) surface point cloud scaled into [-0.9, 0.9],
splits ``planes`` ``(1, 3, 512, 128, 128)`` into 64 SDF channels and 448 part-feature channels, and samples the
latter at points on each face (``sample_triplane_feat``), averaging per face. Its weights come from a Lightning
checkpoint's ``state_dict`` (``model/model_objaverse.ckpt``).

Here ``pvcnn`` turns the point cloud into small planes (a point-density channel plus each plane's coordinates) and
``triplane_transformer`` projects them to 512 channels with ``weight`` (all zeros until a checkpoint is loaded)
through a sine: features that vary smoothly over the surface, so clustering them gives compact parts. Nothing
about them is learned. Making ``PARTFIELD_STANDIN_FAIL_FLAG`` name an existing file makes ``pvcnn`` fail.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from standin_calls import record
from torch import nn

RESOLUTION = 16  # upstream: 128
LOW_CHANNELS = 4  # upstream: cfg.pvcnn.z_triplane_channels (256)
_AXES = ((0, 1), (1, 2), (0, 2))


def _failing() -> bool:
    flag = os.environ.get("PARTFIELD_STANDIN_FAIL_FLAG")
    return bool(flag) and Path(flag).exists()


class _PointEncoder(nn.Module):
    """Stands in for ``TriPlanePC2Encoder``: ``forward(point_cloud_xyz, point_cloud_feature)`` -> triplanes."""

    def forward(self, point_cloud_xyz: torch.Tensor, point_cloud_feature: torch.Tensor | None = None) -> torch.Tensor:
        record("partfield.pvcnn", points=list(point_cloud_xyz.shape), dtype=str(point_cloud_xyz.dtype),
               same_feature=point_cloud_feature is point_cloud_xyz)
        if _failing():
            raise RuntimeError("PartField stand-in failing on purpose: CUDA error: device-side assert triggered")
        n = point_cloud_xyz.shape[0]
        ticks = torch.linspace(-1, 1, RESOLUTION, device=point_cloud_xyz.device)
        rows, cols = torch.meshgrid(ticks, ticks, indexing="ij")
        planes = []
        for a, b in _AXES:
            cells = ((point_cloud_xyz[..., [a, b]].clamp(-1, 1) + 1) / 2 * (RESOLUTION - 1)).round().long()
            flat = cells[..., 0] * RESOLUTION + cells[..., 1]
            density = torch.zeros(n, RESOLUTION * RESOLUTION, device=point_cloud_xyz.device)
            density.scatter_add_(1, flat, torch.ones_like(flat, dtype=density.dtype))
            density = (density / density.amax(dim=1, keepdim=True).clamp(min=1)).view(n, RESOLUTION, RESOLUTION)
            planes.append(torch.stack([density, cols.expand(n, -1, -1), rows.expand(n, -1, -1),
                                       torch.ones_like(density)], dim=1))
        return torch.stack(planes, dim=1)  # (N, 3, LOW_CHANNELS, R, R)


class _PlaneDecoder(nn.Module):
    """Stands in for ``TriplaneTransformer``: low-channel triplanes -> ``triplane_dim`` channels."""

    def __init__(self, triplane_dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(triplane_dim, LOW_CHANNELS))

    def forward(self, triplanes: torch.Tensor) -> torch.Tensor:
        projected = torch.einsum("oc,npchw->npohw", self.weight.to(triplanes.dtype), triplanes)
        return torch.sin(3.0 * projected)


class Model(nn.Module):
    def __init__(self, cfg) -> None:  # noqa: ANN001 - the yacs config
        super().__init__()
        record("partfield.Model", continue_ckpt=cfg.continue_ckpt, n_point_per_face=cfg.n_point_per_face,
               n_sample_each=cfg.n_sample_each, triplane_channels_high=cfg.triplane_channels_high)
        self.cfg = cfg
        self.pvcnn = _PointEncoder()
        self.triplane_transformer = _PlaneDecoder(cfg.triplane_channels_high)
