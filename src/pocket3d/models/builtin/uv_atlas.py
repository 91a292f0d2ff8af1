"""UV atlases: xatlas in a process of its own, under a time limit, and a plain per-face atlas when it runs out.

xatlas has no way to stop it, and on some degenerate input (a strip of needle triangles) it never finishes; in a
child process it can be killed. The fallback packs each face into a grid cell of its own: poorer texture use,
but it always finishes, in time proportional to the face count.

xatlas runs in ``_xatlas_child.py``, started by path (``python -I``), so the child imports numpy and xatlas only.
"""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import numpy as np

CHILD = Path(__file__).with_name("_xatlas_child.py")


def atlas(vertices: np.ndarray, faces: np.ndarray, resolution: int, padding: int,
          timeout: float) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(source vertex of each new vertex, faces on the new vertices, uv) from xatlas; None when it ran out of
    time (or failed)."""
    given = io.BytesIO()
    np.savez(given, vertices=vertices.astype(np.float32), faces=faces.astype(np.uint32),
             options=np.array([resolution, padding]))
    try:
        run = subprocess.run([sys.executable, "-I", str(CHILD)], input=given.getvalue(), capture_output=True,
                             timeout=timeout)
    except subprocess.TimeoutExpired:
        return None
    if run.returncode != 0:
        return None
    found = np.load(io.BytesIO(run.stdout))
    return found["source"].astype(np.int64), found["faces"].astype(np.int64), found["uv"].astype(np.float64)


def grid(faces: np.ndarray, padding: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every face in half a grid cell of its own (two faces a cell), ``padding`` (a share of a cell) around it."""
    count = len(faces)
    side = max(1, int(np.ceil(np.sqrt((count + 1) // 2))))
    cell = np.arange(count) // 2
    origin = np.c_[cell % side, cell // side].astype(np.float64)
    p = min(max(padding, 0.0), 0.2)
    lower = np.array([[p, p], [1 - 2 * p, p], [p, 1 - 2 * p]])
    upper = np.array([[1 - p, 1 - p], [2 * p, 1 - p], [1 - p, 2 * p]])
    corners = np.where((np.arange(count) % 2 == 0)[:, None, None], lower, upper)
    uv = ((origin[:, None, :] + corners) / side).reshape(-1, 2)
    return faces.reshape(-1).astype(np.int64), np.arange(3 * count, dtype=np.int64).reshape(count, 3), uv
