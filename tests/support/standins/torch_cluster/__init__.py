"""TEST STAND-IN for torch_cluster (PyTorch Geometric's clustering ops, built per CUDA version): computes nothing
real.

HoloPart's model code (``holopart/models/part_encoders.py``, ``holopart/models/autoencoders/
autoencoder_kl_triposg.py``) imports ``from torch_cluster import fps`` at module level to subsample surface points;
the adapter lists the package among what HoloPart needs. Here only the name exists: the HoloPart stand-in has no
encoder to call it.
"""

from __future__ import annotations

from typing import Any


def fps(src: Any, batch: Any = None, ratio: float = 0.5, random_start: bool = True, batch_size: Any = None) -> Any:
    raise NotImplementedError("torch_cluster stand-in: farthest point sampling is not implemented here")
