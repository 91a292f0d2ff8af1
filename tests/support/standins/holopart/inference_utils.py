"""TEST STAND-IN for HoloPart's ``holopart/inference_utils.py``: computes nothing real.

Upstream ``flash_extract_geometry(latents, vae, bounds=1.01, num_chunks=10000, mc_level=0.0, octree_depth=9,
min_resolution=63, mini_grid_num=4)`` decodes one part's latents ``(1, tokens, 64)`` on a coarse-to-fine grid of
``2**octree_depth`` cells over ``bounds`` and returns ``[(vertices float32 (V, 3), faces (F, 3))]`` in the part's
local frame, or ``[(None, None)]`` when no surface was found. Here the "surface" is the box the stand-in pipeline
wrote into the latents' first six values, subdivided a little so it has some faces to reduce.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import trimesh
from diso import DiffDMC  # noqa: F401  (imported as upstream does: the real decoder needs it)
from standin_calls import record


@torch.no_grad()
def flash_extract_geometry(latents: torch.FloatTensor, vae: Any, bounds: Any = 1.01, num_chunks: int = 10000,
                           mc_level: float = 0.0, octree_depth: int = 9, min_resolution: int = 63,
                           mini_grid_num: int = 4, **kwargs: Any) -> list[tuple[Any, Any]]:
    record("holopart.flash_extract_geometry", latents=list(latents.shape), bounds=bounds, num_chunks=num_chunks,
           octree_depth=octree_depth, flash=getattr(vae, "flash", None))
    box = latents[0, 0, :6].float().cpu().numpy()
    low, high = box[:3], box[3:]
    if not np.all(high > low):
        return [(None, None)]
    mesh = trimesh.creation.box(extents=high - low).subdivide().subdivide()
    mesh.apply_translation((low + high) / 2)
    return [(np.asarray(mesh.vertices, dtype=np.float32), np.ascontiguousarray(mesh.faces))]
