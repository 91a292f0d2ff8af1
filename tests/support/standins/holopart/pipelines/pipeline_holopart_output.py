"""TEST STAND-IN for HoloPart's ``holopart/pipelines/pipeline_holopart_output.py``: computes nothing real.

Upstream ``HoloPartPipelineOutput(samples, meshes)`` is a diffusers ``BaseOutput`` dataclass: ``samples`` holds the
latents (``output_type="latent"``) or decoded values, ``meshes`` a list of trimesh meshes or None.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch


@dataclass
class HoloPartPipelineOutput:
    samples: torch.Tensor
    meshes: list[Any] | None
