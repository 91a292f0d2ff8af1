"""TEST-ONLY model adapters for the compat tests (tests/support/models-compat.yaml): small but real, they read their
inputs and write real GLB meshes. They stand in for the GPU models the foreign clients were written for.

``KnobbedShapeTestModel`` has the knobs of Hunyuan3D-2 and TRELLIS.2 in its parameters and hands back what it got
as ``params.json``, so a test sees which client option reached the model and how it was clamped. An input image
of one colour makes it fail on purpose: pure red as an out-of-memory error (the scheduler calls that transient),
any other colour as a model error (deterministic).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Literal

import numpy as np
import trimesh
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field

from pocket3d.models import Device, ModelAdapter, ProgressFn, RunInputs


class KnobbedParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # Hunyuan3D-2's knobs (pocket3d.models.adapters.hunyuan3d.ShapeParams)
    steps: int | None = Field(None, ge=1, le=100)
    guidance_scale: float | None = Field(None, ge=0, le=20)
    octree_resolution: int | None = Field(None, ge=16, le=512)
    num_chunks: int | None = Field(None, ge=1000, le=200000)
    max_faces: int | None = Field(None, ge=100, le=2_000_000)
    # TRELLIS.2's (pocket3d.models.adapters.trellis2.Trellis2Params)
    resolution: Literal[512, 1024, 1536] | None = None
    ss_sampling_steps: int | None = Field(None, ge=1, le=50)
    ss_guidance_strength: float | None = Field(None, ge=1, le=10)
    shape_slat_sampling_steps: int | None = Field(None, ge=1, le=50)
    shape_slat_guidance_strength: float | None = Field(None, ge=1, le=10)
    tex_slat_sampling_steps: int | None = Field(None, ge=1, le=50)
    tex_slat_guidance_strength: float | None = Field(None, ge=1, le=10)


class KnobbedShapeTestModel(ModelAdapter):
    """TEST-ONLY image -> shape (untextured: a paint stage follows unless the request asks for the shape only):
    the image's brightness as a height field. ``options.seconds_per_step`` makes each of its ``steps`` (default 5)
    take that long, for the tests of slow jobs."""

    Params = KnobbedParams

    def load(self, device: Device) -> None:
        self.device = device

    def run(self, inputs: RunInputs, params: KnobbedParams, progress: ProgressFn) -> dict[str, Path]:
        with Image.open(inputs.images[0]) as im:
            rgb = np.asarray(im.convert("RGB").resize((16, 16)), dtype=np.float64) / 255.0
        if np.ptp(rgb.reshape(-1, 3), axis=0).max() == 0:
            if tuple(rgb[0, 0]) == (1.0, 0.0, 0.0):
                raise MemoryError("the test model ran out of memory on purpose (a pure red image)")
            raise RuntimeError("the test model sees no object in an image of one colour")
        steps = params.steps or 5
        pause = float(self.spec.options.get("seconds_per_step", 0.0))
        for i in range(steps):
            time.sleep(pause)
            progress((i + 1) / (steps + 1), f"step {i + 1} of {steps}")
        n = 16
        ys, xs = np.mgrid[0:n, 0:n]
        vertices = np.column_stack([xs.ravel() / (n - 1), rgb.mean(axis=2).ravel() * 0.3, ys.ravel() / (n - 1)])
        idx = np.arange(n * n).reshape(n, n)
        a, b, c, d = idx[:-1, :-1].ravel(), idx[:-1, 1:].ravel(), idx[1:, :-1].ravel(), idx[1:, 1:].ravel()
        faces = np.concatenate([np.column_stack([a, c, b]), np.column_stack([b, c, d])])
        out = inputs.work_dir / "mesh.glb"
        trimesh.Trimesh(vertices, faces, process=False).export(out)
        knobs = inputs.work_dir / "params.json"
        knobs.write_text(json.dumps({**params.model_dump(), "seed": inputs.seed, "quality": inputs.quality}))
        return {"mesh": out, "params": knobs}


class FlatPaintTestModel(ModelAdapter):
    """TEST-ONLY mesh + image or text -> the mesh in one colour: the image's mean colour, or orange for text."""

    def load(self, device: Device) -> None:
        self.device = device

    def run(self, inputs: RunInputs, params: BaseModel, progress: ProgressFn) -> dict[str, Path]:
        assert inputs.mesh is not None
        mesh = trimesh.load(str(inputs.mesh), force="mesh", process=False)
        colour = [230, 120, 30]
        if inputs.images:
            with Image.open(inputs.images[0]) as im:
                colour = [int(v) for v in np.asarray(im.convert("RGB"), dtype=np.float64).reshape(-1, 3).mean(axis=0)]
        progress(0.5, "painting")
        mesh.visual = trimesh.visual.ColorVisuals(mesh, vertex_colors=np.tile([*colour, 255], (len(mesh.vertices), 1)))
        out = inputs.work_dir / "mesh.glb"
        mesh.export(out)
        return {"mesh": out}
