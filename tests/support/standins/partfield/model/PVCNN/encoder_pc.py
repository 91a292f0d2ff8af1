"""TEST STAND-IN for PartField's ``partfield/model/PVCNN/encoder_pc.py``: computes nothing real.

Upstream ``sample_triplane_feat(feature_triplane, normalized_pos)`` takes triplanes ``(N, 3, C, H, W)`` and points
``(N, M, 3)`` in [-1, 1], samples each plane bilinearly (border padding, corners aligned) at the point's (x, y),
(y, z) and (x, z) coordinates, and returns the sum, ``(N, M, C)``. This one does the same sampling on whatever
planes the stand-in model made, so the adapter's per-face averaging runs on real tensors.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812
from standin_calls import record

_AXES = ((0, 1), (1, 2), (0, 2))  # the plane of each of the three feature planes


def sample_triplane_feat(feature_triplane: torch.Tensor, normalized_pos: torch.Tensor) -> torch.Tensor:
    record("partfield.sample_triplane_feat", planes=list(feature_triplane.shape), points=list(normalized_pos.shape),
           dtype=str(normalized_pos.dtype))
    total = None
    for plane, (a, b) in zip(torch.unbind(feature_triplane, dim=1), _AXES, strict=True):
        grid = normalized_pos[:, :, [a, b]].unsqueeze(1).to(plane.dtype)  # (N, 1, M, 2)
        sampled = F.grid_sample(plane, grid, mode="bilinear", padding_mode="border", align_corners=True)
        total = sampled if total is None else total + sampled  # (N, C, 1, M)
    return total.squeeze(2).permute(0, 2, 1)
