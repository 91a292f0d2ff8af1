"""TEST-ONLY: a library that is slow to import, like torch or hy3dgen (``P3D_SLOWLIB_SECONDS``, default 1). Each
process that imports it appends its pid to the file ``P3D_SLOWLIB_MARKER`` names, so a test can tell who did."""

from __future__ import annotations

import os
import time

time.sleep(float(os.environ.get("P3D_SLOWLIB_SECONDS", "1")))
if os.environ.get("P3D_SLOWLIB_MARKER"):
    with open(os.environ["P3D_SLOWLIB_MARKER"], "a") as f:
        f.write(f"{os.getpid()}\n")
