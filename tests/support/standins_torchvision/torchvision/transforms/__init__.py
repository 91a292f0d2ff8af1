"""TEST STAND-IN: Resize, CenterCrop, Normalize and Compose on (N, C, H, W) float tensors."""

from __future__ import annotations

from enum import Enum

import torch
import torch.nn.functional as F


class InterpolationMode(Enum):
    NEAREST = "nearest"
    NEAREST_EXACT = "nearest-exact"
    BILINEAR = "bilinear"
    BICUBIC = "bicubic"
    BOX = "box"
    HAMMING = "hamming"
    LANCZOS = "lanczos"


class Compose:
    def __init__(self, transforms):
        self.transforms = list(transforms)

    def __call__(self, x):
        for t in self.transforms:
            x = t(x)
        return x


class Resize:
    """Scales the shorter side to ``size`` (an int), or to (h, w)."""

    def __init__(self, size, interpolation=InterpolationMode.BILINEAR, max_size=None, antialias=True):
        self.size, self.mode, self.antialias = size, InterpolationMode(interpolation), antialias

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        if isinstance(self.size, int):
            scale = self.size / min(h, w)
            out = (max(1, round(h * scale)), max(1, round(w * scale)))
        else:
            out = tuple(self.size)
        batched = x if x.dim() == 4 else x.unsqueeze(0)
        kw = {"align_corners": False, "antialias": self.antialias} if self.mode != InterpolationMode.NEAREST else {}
        y = F.interpolate(batched.float(), size=out, mode=self.mode.value, **kw).to(x.dtype)
        return y if x.dim() == 4 else y.squeeze(0)


class CenterCrop:
    def __init__(self, size):
        self.size = (size, size) if isinstance(size, int) else tuple(size)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        th, tw = self.size
        top, left = max(0, (h - th) // 2), max(0, (w - tw) // 2)
        return x[..., top:top + th, left:left + tw]


class Normalize:
    def __init__(self, mean, std, inplace=False):
        self.mean, self.std = list(mean), list(std)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        shape = (-1, 1, 1)
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(shape)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(shape)
        return (x - mean) / std


from torchvision.transforms import functional, v2  # noqa: E402,F401  (transformers imports both by path)
