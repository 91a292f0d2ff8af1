"""TEST STAND-IN for HoloPart's ``holopart/pipelines/pipeline_holopart.py``: computes nothing real.

Upstream ``HoloPartPipeline`` is a diffusers ``DiffusionPipeline`` (vae, transformer, scheduler, part_encoder):
``from_pretrained(folder or "VAST-AI/HoloPart")``, ``.to(device, dtype)``, and ``__call__(part_surface,
whole_surface, num_inference_steps=50, num_tokens=2048, timesteps=None, guidance_scale=3.5, part_local_surface=None,
..., generator=None, ..., output_type="geometry", ...)`` where ``part_surface`` is ``(B, P, 6)`` points and normals
of each part, ``whole_surface`` ``(B, P, 7)`` the whole shape's with a 0/1 column marking the part, and
``part_local_surface`` the part's points scaled into its own box; ``output_type="latent"`` returns
``HoloPartPipelineOutput(samples=latents (B, num_tokens, 64), meshes=None)``. ``vae.set_flash_decoder()`` switches
the VAE's decoder to the attention processor ``flash_extract_geometry`` uses.

Here the "latent" of a part is random numbers (from the generator) whose first six values are the box that holds
the part's local points: the stand-in decoder turns them back into that box, so what the adapter gets back is a
closed mesh where the part was. Making ``HOLOPART_STANDIN_FAIL_FLAG`` name an existing file makes ``__call__`` fail.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from standin_calls import record
from torch_cluster import fps  # noqa: F401  (upstream's models, which this module imports, need it)

from .pipeline_holopart_output import HoloPartPipelineOutput

LATENT_CHANNELS = 64


class _StandinVAE:
    def __init__(self) -> None:
        self.flash = False

    def set_flash_decoder(self) -> None:
        record("holopart.vae.set_flash_decoder")
        self.flash = True


class HoloPartPipeline:
    def __init__(self, folder: str) -> None:
        self.folder = folder
        self.vae = _StandinVAE()
        self.device = torch.device("cpu")
        self.dtype = torch.float32
        self.progress_bar_config: dict[str, Any] = {}

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str, **kwargs: Any) -> HoloPartPipeline:
        record("holopart.from_pretrained", path=str(pretrained_model_name_or_path), kwargs=kwargs)
        index = Path(pretrained_model_name_or_path) / "model_index.json"
        if not index.is_file():  # the real one would try the hub here; the tests are offline
            raise OSError(f"{pretrained_model_name_or_path} does not appear to have a file named model_index.json")
        if json.loads(index.read_text()).get("_class_name") != "HoloPartPipeline":
            raise ValueError(f"{index} is not a HoloPartPipeline's")
        return cls(str(pretrained_model_name_or_path))

    def to(self, *args: Any, **kwargs: Any) -> HoloPartPipeline:
        for arg in (*args, *kwargs.values()):
            if isinstance(arg, torch.dtype):
                self.dtype = arg
            elif isinstance(arg, (str, torch.device)):
                self.device = torch.device(arg)
        record("holopart.to", device=str(self.device), dtype=str(self.dtype))
        return self

    def set_progress_bar_config(self, **kwargs: Any) -> None:
        self.progress_bar_config.update(kwargs)

    @torch.no_grad()
    def __call__(self, part_surface: torch.Tensor, whole_surface: torch.Tensor, num_inference_steps: int = 50,
                 num_tokens: int = 2048, timesteps: list[int] | None = None, guidance_scale: float = 3.5,
                 part_local_surface: torch.Tensor | None = None, generator: torch.Generator | None = None,
                 output_type: str = "geometry", **kwargs: Any) -> HoloPartPipelineOutput:
        record("holopart.call", part_surface=list(part_surface.shape), whole_surface=list(whole_surface.shape),
               part_local_surface=None if part_local_surface is None else list(part_local_surface.shape),
               num_inference_steps=num_inference_steps, guidance_scale=guidance_scale, output_type=output_type,
               generator=generator is not None, dtype=str(self.dtype),
               whole_mask_share=whole_surface[..., 6].mean(dim=1).tolist(), kwargs=sorted(kwargs))
        flag = os.environ.get("HOLOPART_STANDIN_FAIL_FLAG")
        if flag and Path(flag).exists():
            raise RuntimeError("HoloPart stand-in failing on purpose: CUDA error: an illegal memory access")
        if output_type != "latent":
            raise NotImplementedError("the stand-in only returns latents (the demo decodes them itself)")
        if part_local_surface is None:
            raise ValueError("the stand-in needs part_local_surface")
        batch = part_surface.shape[0]
        latents = torch.randn((batch, num_tokens, LATENT_CHANNELS), generator=generator, device=self.device)
        points = part_local_surface[..., :3].float()
        latents[:, 0, :3] = points.amin(dim=1)
        latents[:, 0, 3:6] = points.amax(dim=1)
        return HoloPartPipelineOutput(samples=latents.to(self.dtype), meshes=None)
