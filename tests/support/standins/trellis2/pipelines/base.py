"""TEST STAND-IN for TRELLIS.2's pipeline base (upstream trellis2/pipelines/base.py): computes nothing real.

``Pipeline.from_pretrained(path, config_file="pipeline.json")`` reads the config from a local folder only (upstream
falls back to ``hf_hub_download``, which fails offline; the stand-in never downloads) and builds the samplers it
names with their default parameters, as upstream's subclasses do; ``to(device)`` notes the device (with
``low_vram`` upstream moves nothing until a stage needs it).
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
import torch
from PIL import Image
from standin_calls import record

from trellis2.pipelines import samplers

PBR_ATTR_LAYOUT = {"base_color": slice(0, 3), "metallic": slice(3, 4), "roughness": slice(4, 5),
                   "alpha": slice(5, 6)}


class Pipeline:
    sampler_names: tuple[str, ...] = ()

    def __init__(self, args: dict) -> None:
        for name in self.sampler_names:
            entry = args[name]
            setattr(self, name, getattr(samplers, entry["name"])(**entry.get("args", {})))
            setattr(self, f"{name}_params", dict(entry.get("params", {})))
        self.low_vram = args.get("low_vram", True)
        self.pbr_attr_layout = dict(PBR_ATTR_LAYOUT)
        self._device: Any = "cpu"

    @classmethod
    def from_pretrained(cls, path: str, config_file: str = "pipeline.json") -> Pipeline:
        record("trellis2.from_pretrained", path=path, config_file=config_file, pipeline=cls.__name__)
        config = os.path.join(path, config_file)
        if not os.path.exists(config):
            raise OSError(f"TEST STAND-IN for TRELLIS.2: {config} not found (the stand-in never downloads)")
        with open(config) as f:
            return cls(json.load(f)["args"])

    @property
    def device(self) -> Any:
        return self._device

    def to(self, device: torch.device) -> None:
        record("trellis2.to", device=str(device), low_vram=self.low_vram)
        self._device = device

    def cuda(self) -> None:
        self.to(torch.device("cuda"))

    def preprocess_image(self, input: Image.Image) -> Image.Image:
        """As upstream: the alpha channel when any pixel is transparent (else BiRefNet, which the stand-in does not
        have), cropped to the pixels above 80% opacity, blended onto black."""
        has_alpha = input.mode == "RGBA" and not np.all(np.asarray(input)[:, :, 3] == 255)
        output = input if has_alpha else input.convert("RGBA")
        if not has_alpha:
            record("trellis2.rembg", size=list(input.size))
        alpha = np.asarray(output)[:, :, 3]
        bbox = np.argwhere(alpha > 0.8 * 255)
        x0, y0, x1, y1 = np.min(bbox[:, 1]), np.min(bbox[:, 0]), np.max(bbox[:, 1]), np.max(bbox[:, 0])
        size, cx, cy = max(x1 - x0, y1 - y0), (x0 + x1) / 2, (y0 + y1) / 2
        output = output.crop((cx - size // 2, cy - size // 2, cx + size // 2, cy + size // 2))
        rgba = np.asarray(output).astype(np.float32) / 255
        return Image.fromarray((rgba[:, :, :3] * rgba[:, :, 3:4] * 255).astype(np.uint8))


def mean_colour(image: Image.Image) -> np.ndarray:
    rgb = np.asarray(image.convert("RGB"), dtype=np.float32) / 255
    lit = rgb[rgb.sum(axis=2) > 0.05]  # the object, blended onto black
    return lit.mean(axis=0) if len(lit) else np.array([0.5, 0.5, 0.5], np.float32)


def describe(image: Image.Image) -> dict:
    alpha = np.asarray(image.getchannel("A")) if image.mode == "RGBA" else None
    return {"mode": image.mode, "size": list(image.size),
            "transparent_pixels": int((alpha < 255).sum()) if alpha is not None else 0}
