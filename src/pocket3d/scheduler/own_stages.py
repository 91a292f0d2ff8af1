"""pocket3d's own stages (orient, export: :func:`pocket3d.scheduler.stage_io.run_own_stage`) as a model that a
worker process hosts.

They are model-free CPU work, but loading, converting and drawing previews hold the interpreter for tens of
milliseconds a job and grow the heap: run in the process that serves the API they slowed every request and kept
hundreds of MB after a burst of submissions. The node scheduler hands each of them to an own-stage worker (a
:class:`~pocket3d.workers.supervisor.DeviceWorker` of its own, not a device the policy places models on), which runs
them here. The scheduler reads the inputs and stores the outputs, as for a model's stage; the stage's warnings come
back as a model's do, its details (what orient found) in a file under ``DETAILS_KEY``.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from pocket3d import geometry
from pocket3d.models.spec import Device, Feature, ModelAdapter, ModelSpec, ProgressFn, RunInputs, warn
from pocket3d.scheduler import stage_io

OWN_STAGES_MODEL_ID = "pocket3d-own-stages"
DETAILS_KEY = "__details__"  # an output that is the stage's details as JSON, not a file to publish


class OwnStageParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    stage: str  # orient or export
    params: dict[str, Any] = {}  # the stage's, as the submission wrote them


class OwnStages(ModelAdapter):
    Params = OwnStageParams
    warm_modules = ("pocket3d.geometry", "trimesh")

    def load(self, device: Device) -> None:
        self.device = device
        self.limits = geometry.MeshLimits(**self.spec.options["mesh_limits"])

    def run(self, inputs: RunInputs, params: OwnStageParams, progress: ProgressFn) -> dict[str, Path]:
        progress(0.0, None)  # a cancel that came first stops it here
        done = stage_io.run_own_stage(params.stage, inputs, params.params, inputs.work_dir, self.limits)
        for w in done.warnings:
            warn(progress, w.code, w.message)
        files = dict(done.files)
        if done.details is not None:
            details = inputs.work_dir / "own-stage-details.json"
            details.write_text(json.dumps(done.details))
            files[DETAILS_KEY] = details
        return files


def own_stages_spec(limits: geometry.MeshLimits, concurrency: int) -> ModelSpec:
    return ModelSpec(id=OWN_STAGES_MODEL_ID, feature=Feature.MESH_GENERATION, supported_inputs=frozenset({"mesh"}),
                     supported_outputs=tuple(geometry.FORMATS), max_concurrent=concurrency, devices=("cpu",),
                     description="pocket3d's own stages (orient, export)", options={"mesh_limits": asdict(limits)})
