"""TEST STAND-IN for TRELLIS's ``trellis.pipelines`` (upstream trellis/pipelines/trellis_image_to_3d.py and
trellis_text_to_3d.py): computes nothing real.

``TrellisImageTo3DPipeline`` and ``TrellisTextTo3DPipeline`` with the real method names, arguments and defaults:
``from_pretrained(path)`` reads ``pipeline.json`` from a local folder (the stand-in never downloads), ``to(device)``,
``run(image | prompt, num_samples=1, seed=42, sparse_structure_sampler_params={}, slat_sampler_params={},
formats=[...], preprocess_image=True)``, ``run_multi_image(images, ..., mode="stochastic")``. Sampler parameters
are laid over pipeline.json's as upstream; each stage runs its sampler's ``sample`` loop step by step. The result
is ``{"gaussian": [Gaussian], "mesh": [MeshExtractResult]}`` (those asked for in ``formats``): an icosphere whose
size follows the seed, in TRELLIS's Z-up frame, coloured with the conditioning image's mean colour.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
import torch
from PIL import Image
from standin_calls import record

from trellis import FAIL_SEED
from trellis.pipelines import samplers
from trellis.representations import Gaussian, MeshExtractResult

FORMATS = ["mesh", "gaussian", "radiance_field"]


def _read_config(path: str) -> dict:
    config = os.path.join(path, "pipeline.json")
    if not os.path.exists(config):
        # Upstream falls back to hf_hub_download(path, "pipeline.json"); offline that raises. The stand-in never
        # downloads.
        raise OSError(f"TEST STAND-IN for TRELLIS: {config} not found (the stand-in never downloads)")
    with open(config) as f:
        return json.load(f)["args"]


def describe(image: Image.Image) -> dict:
    alpha = np.asarray(image.getchannel("A")) if image.mode == "RGBA" else None
    return {"mode": image.mode, "size": list(image.size),
            "transparent_pixels": int((alpha < 255).sum()) if alpha is not None else 0}


class _Pipeline:
    def __init__(self, args: dict) -> None:
        self.models: dict[str, Any] = {"sparse_structure_flow_model": torch.nn.Linear(8, 8),
                                       "slat_flow_model": torch.nn.Linear(8, 8)}
        ss, slat = args["sparse_structure_sampler"], args["slat_sampler"]
        self.sparse_structure_sampler = getattr(samplers, ss["name"])(**ss.get("args", {}))
        self.sparse_structure_sampler_params = dict(ss.get("params", {}))
        self.slat_sampler = getattr(samplers, slat["name"])(**slat.get("args", {}))
        self.slat_sampler_params = dict(slat.get("params", {}))
        self._device = torch.device("cpu")

    @property
    def device(self) -> torch.device:
        return self._device

    def to(self, device: torch.device) -> None:
        record("trellis.to", device=str(device))
        for model in self.models.values():
            model.to(device)
        self._device = torch.device(device)

    def cuda(self) -> None:
        self.to(torch.device("cuda"))

    def _sample(self, colour: np.ndarray, num_samples: int, seed: int, ss_params: dict, slat_params: dict,
                formats: list[str]) -> dict:
        if seed == FAIL_SEED:
            raise RuntimeError(f"TEST STAND-IN for TRELLIS: failure requested by seed {FAIL_SEED}")
        torch.manual_seed(seed)
        ss = {**self.sparse_structure_sampler_params, **ss_params}
        slat = {**self.slat_sampler_params, **slat_params}
        noise = torch.randn(num_samples, 8, 16, 16, 16, device=self.device)
        self.sparse_structure_sampler.sample(self.models["sparse_structure_flow_model"], noise, cond=None, **ss)
        self.slat_sampler.sample(self.models["slat_flow_model"], torch.randn(64, 8, device=self.device), cond=None,
                                 **slat)
        radius = 0.3 + 0.1 * (seed % 7) / 7
        out: dict[str, list] = {}
        if "mesh" in formats:
            out["mesh"] = [MeshExtractResult.icosphere(radius, self.device) for _ in range(num_samples)]
        if "gaussian" in formats:
            out["gaussian"] = [Gaussian.around(radius, colour, self.device) for _ in range(num_samples)]
        return out


def _mean_colour(image: Image.Image) -> np.ndarray:
    rgb = np.asarray(image.convert("RGB"), dtype=np.float32) / 255
    lit = rgb[rgb.sum(axis=2) > 0.05]  # preprocess_image blends the object onto black
    return lit.mean(axis=0) if len(lit) else np.array([0.5, 0.5, 0.5], np.float32)


class TrellisImageTo3DPipeline(_Pipeline):
    @staticmethod
    def from_pretrained(path: str) -> TrellisImageTo3DPipeline:
        record("trellis.from_pretrained", path=path, pipeline="TrellisImageTo3DPipeline")
        return TrellisImageTo3DPipeline(_read_config(path))

    def preprocess_image(self, input: Image.Image) -> Image.Image:
        """As upstream: the alpha channel when any pixel is transparent (else rembg, which the stand-in does not
        have), cropped to the pixels above 80% opacity with a 1.2x margin, 518 px, blended onto black."""
        has_alpha = input.mode == "RGBA" and not np.all(np.asarray(input)[:, :, 3] == 255)
        if not has_alpha:
            record("trellis.rembg", size=list(input.size))
            output = input.convert("RGBA")  # upstream: rembg.remove(input, session=u2net)
        else:
            output = input
        alpha = np.asarray(output)[:, :, 3]
        bbox = np.argwhere(alpha > 0.8 * 255)
        x0, y0, x1, y1 = np.min(bbox[:, 1]), np.min(bbox[:, 0]), np.max(bbox[:, 1]), np.max(bbox[:, 0])
        size = int(max(x1 - x0, y1 - y0) * 1.2)
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        output = output.crop((cx - size // 2, cy - size // 2, cx + size // 2, cy + size // 2))
        output = output.resize((518, 518), Image.Resampling.LANCZOS)
        rgba = np.asarray(output).astype(np.float32) / 255
        return Image.fromarray((rgba[:, :, :3] * rgba[:, :, 3:4] * 255).astype(np.uint8))

    def run(self, image: Image.Image, num_samples: int = 1, seed: int = 42,
            sparse_structure_sampler_params: dict = {}, slat_sampler_params: dict = {},  # noqa: B006 (upstream's)
            formats: list[str] = FORMATS, preprocess_image: bool = True) -> dict:
        record("trellis.run", image=describe(image), num_samples=num_samples, seed=seed,
               sparse_structure_sampler_params=sparse_structure_sampler_params,
               slat_sampler_params=slat_sampler_params, formats=formats, preprocess_image=preprocess_image,
               grad_enabled=torch.is_grad_enabled())
        if preprocess_image:
            image = self.preprocess_image(image)
        return self._sample(_mean_colour(image), num_samples, seed, sparse_structure_sampler_params,
                            slat_sampler_params, formats)

    def run_multi_image(self, images: list[Image.Image], num_samples: int = 1, seed: int = 42,
                        sparse_structure_sampler_params: dict = {}, slat_sampler_params: dict = {},  # noqa: B006
                        formats: list[str] = FORMATS, preprocess_image: bool = True,
                        mode: str = "stochastic") -> dict:
        record("trellis.run_multi_image", images=[describe(i) for i in images], num_samples=num_samples, seed=seed,
               sparse_structure_sampler_params=sparse_structure_sampler_params,
               slat_sampler_params=slat_sampler_params, formats=formats, preprocess_image=preprocess_image,
               mode=mode)
        if mode not in ("stochastic", "multidiffusion"):
            raise ValueError(f"Unsupported mode: {mode}")
        if preprocess_image:
            images = [self.preprocess_image(i) for i in images]
        colour = np.mean([_mean_colour(i) for i in images], axis=0)
        return self._sample(colour, num_samples, seed, sparse_structure_sampler_params, slat_sampler_params,
                            formats)


class TrellisTextTo3DPipeline(_Pipeline):
    @staticmethod
    def from_pretrained(path: str) -> TrellisTextTo3DPipeline:
        record("trellis.from_pretrained", path=path, pipeline="TrellisTextTo3DPipeline")
        return TrellisTextTo3DPipeline(_read_config(path))

    def run(self, prompt: str, num_samples: int = 1, seed: int = 42,
            sparse_structure_sampler_params: dict = {}, slat_sampler_params: dict = {},  # noqa: B006 (upstream's)
            formats: list[str] = FORMATS) -> dict:
        record("trellis.text.run", prompt=prompt, num_samples=num_samples, seed=seed,
               sparse_structure_sampler_params=sparse_structure_sampler_params,
               slat_sampler_params=slat_sampler_params, formats=formats)
        # A colour from the prompt's letters: something of the input shows in the output.
        code = sum(prompt.encode()) % 997
        colour = np.array([(code % 10) / 10, (code // 10 % 10) / 10, (code // 100) / 10], np.float32) * 0.8 + 0.1
        return self._sample(colour, num_samples, seed, sparse_structure_sampler_params, slat_sampler_params,
                            formats)
