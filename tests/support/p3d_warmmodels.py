"""TEST-ONLY models for warm starts: slow to construct (``options.construct_seconds`` in ``load``) and built on a
library slow to import (p3d_slowlib), as Hunyuan3D-2's pipeline is at its first load. A run takes no time and
records when it began (``started.json``), so a test can tell how long a job waited for its model."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from p3d_workermodels import write_triangle_glb
from pydantic import BaseModel

from pocket3d.models import Device, ModelAdapter, ProgressFn, RunInputs


class SlowStartTestModel(ModelAdapter):
    """TEST-ONLY: imports p3d_slowlib on load, then takes ``options.construct_seconds`` to construct."""

    requires = ("p3d_slowlib",)

    def load(self, device: Device) -> None:
        import p3d_slowlib  # noqa: F401 - the import is the point: warm workers have done it already

        time.sleep(float(self.spec.options.get("construct_seconds", 0)))
        self.device = device

    def run(self, inputs: RunInputs, params: BaseModel, progress: ProgressFn) -> dict[str, Path]:
        started = time.time()
        progress(0.5, "running")
        started_file = inputs.work_dir / "started.json"
        started_file.write_text(json.dumps({"run_started": started, "pid": os.getpid()}))
        return {"mesh": write_triangle_glb(inputs.work_dir / "mesh.glb"), "started": started_file}
