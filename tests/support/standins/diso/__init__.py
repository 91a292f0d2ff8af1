"""TEST STAND-IN for diso (differentiable iso-surface extraction, CUDA only): computes nothing real.

HoloPart's ``holopart/inference_utils.py`` imports ``from diso import DiffDMC`` at module level and calls
``DiffDMC(dtype=torch.float32)(sdf, deform=None, return_quads=False, normalize=False)`` in its flash decoder. The
HoloPart stand-in imports it the same way; nothing calls it.
"""

from __future__ import annotations

from typing import Any


class DiffDMC:
    def __init__(self, dtype: Any = None) -> None:
        self.dtype = dtype

    def to(self, device: Any) -> DiffDMC:
        return self

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError("diso stand-in: dual marching cubes is not implemented here")
