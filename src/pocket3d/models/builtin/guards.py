"""Checks the built-in models make between their steps: a value that came out NaN or infinite (a degenerate face
divided by its zero area, a solve that did not converge) stops the stage at once with the step's name, instead
of flowing on into a texture of garbage or a loop that never ends."""

from __future__ import annotations

import numpy as np

from pocket3d.models.spec import InputRejected


def require_finite(what: str, *arrays: np.ndarray) -> None:
    for array in arrays:
        if not np.isfinite(np.asarray(array, dtype=np.float64)).all():
            raise InputRejected(f"{what} came out non-finite (NaN or infinity): the mesh is too degenerate for this "
                                "model")
