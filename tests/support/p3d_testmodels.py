"""TEST-ONLY model adapters, registered through models.yaml like any plugin.

They are small but real: they read the input files and write real GLB meshes, so the whole path from upload
to download is exercised. They stand in for the built-in and GPU models, which are not part of these tests.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import trimesh
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field

from pocket3d.models import Device, InputRejected, ModelAdapter, ProgressFn, RunInputs
from pocket3d.models.spec import warn

from p3d_workermodels import hold_until_released


class HeightfieldParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    grid: int = Field(16, ge=2, le=128)
    delay: float = Field(0.0, ge=0, le=3600, description="seconds to spend, in progress steps (slow-model tests)")
    steps: int = Field(5, ge=1, le=100)
    warning: str | None = Field(None, max_length=500, description="a warning it gives (TEST_WARNING), as a model "
                                "telling of a fallback (naming its files) would")
    hold_until: str | None = Field(None, max_length=4096, description="a path: after its delay the run waits, "
                                   "reporting progress, until a file exists there (tests that act while a stage "
                                   "runs release it when they are done)")


class HeightfieldTestModel(ModelAdapter):
    """TEST-ONLY image -> mesh: the image's brightness as a height field, coloured by the image."""

    Params = HeightfieldParams

    def load(self, device: Device) -> None:
        self.device = device

    def run(self, inputs: RunInputs, params: HeightfieldParams, progress: ProgressFn) -> dict[str, Path]:
        if not inputs.images:
            raise InputRejected("the heightfield test model needs an image")
        for i in range(params.steps):
            time.sleep(params.delay / params.steps)
            progress((i + 1) / (params.steps + 1), "thinking slowly")
        if params.warning:
            warn(progress, "TEST_WARNING", params.warning)
        if params.hold_until is not None:
            hold_until_released(params.hold_until, progress, params.steps / (params.steps + 1))
        with Image.open(inputs.images[0]) as im:
            rgb = np.asarray(im.convert("RGB").resize((params.grid, params.grid)), dtype=np.float64) / 255.0
        n = params.grid
        ys, xs = np.mgrid[0:n, 0:n]
        height = rgb.mean(axis=2)
        vertices = np.column_stack([xs.ravel() / (n - 1), height.ravel() * 0.3, ys.ravel() / (n - 1)])
        idx = np.arange(n * n).reshape(n, n)
        a, b, c, d = idx[:-1, :-1].ravel(), idx[:-1, 1:].ravel(), idx[1:, :-1].ravel(), idx[1:, 1:].ravel()
        faces = np.concatenate([np.column_stack([a, c, b]), np.column_stack([b, c, d])])
        colors = np.column_stack([(rgb.reshape(-1, 3) * 255).astype(np.uint8), np.full(n * n, 255, np.uint8)])
        mesh = trimesh.Trimesh(vertices, faces, vertex_colors=colors, process=False)
        out = inputs.work_dir / "mesh.glb"
        mesh.export(out)
        progress(1.0, None)
        return {"mesh": out}


class SubdivideTestModel(ModelAdapter):
    """TEST-ONLY mesh -> mesh: one loop of midpoint subdivision of the input mesh."""

    def load(self, device: Device) -> None:
        self.device = device

    def run(self, inputs: RunInputs, params: BaseModel, progress: ProgressFn) -> dict[str, Path]:
        assert inputs.mesh is not None
        from pocket3d.geometry import load_scene  # what adapters read a mesh input with (it may be a mesh zip)
        from pocket3d.geometry.meshes import one_mesh

        mesh = one_mesh(load_scene(inputs.mesh, inputs.mesh.suffix.lstrip(".")))
        progress(0.5, "subdividing")
        mesh = mesh.subdivide()
        out = inputs.work_dir / "mesh.glb"
        mesh.export(out)
        return {"mesh": out}


class FailingParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    message: str = Field("the test model failed on purpose", max_length=500, description="what it raises")


class FailingTestModel(ModelAdapter):
    """TEST-ONLY: always raises, to show a model's own error ends as a failed job with MODEL_ERROR."""

    Params = FailingParams

    def load(self, device: Device) -> None:
        self.device = device

    def run(self, inputs: RunInputs, params: FailingParams, progress: ProgressFn) -> dict[str, Path]:
        progress(0.3, None)
        (inputs.work_dir / "half-written.glb").write_bytes(b"glTF partial")
        raise RuntimeError(params.message)


class PassThroughTestModel(ModelAdapter):
    """TEST-ONLY: hands back its input image file itself among its outputs, as a careless adapter might."""

    def load(self, device: Device) -> None:
        self.device = device

    def run(self, inputs: RunInputs, params: BaseModel, progress: ProgressFn) -> dict[str, Path]:
        mesh = inputs.work_dir / "mesh.glb"
        trimesh.creation.box().export(mesh)
        return {"mesh": mesh, "reference": inputs.images[0]}


class SkinnedTubeTestModel(ModelAdapter):
    """TEST-ONLY rigging stand-in: ignores its input and returns a tube skinned to three joints, so the tests can
    follow a skinned GLB through the export stage (pass-through, FBX conversion)."""

    def load(self, device: Device) -> None:
        self.device = device

    def run(self, inputs: RunInputs, params: BaseModel, progress: ProgressFn) -> dict[str, Path]:
        from pocket3d.geometry import Skeleton, write_skinned_glb

        mesh = trimesh.creation.cylinder(radius=0.2, height=2.0, sections=16).subdivide()
        z = mesh.vertices[:, 2]
        weights = np.column_stack([np.clip(-z, 0, 1), 1 - np.abs(z), np.clip(z, 0, 1)]) + 1e-6
        skeleton = Skeleton(names=["root", "mid", "tip"], parents=[-1, 0, 1],
                            heads=np.array([[0, 0, -1.0], [0, 0, 0.0], [0, 0, 1.0]]))
        out = inputs.work_dir / "mesh.glb"
        write_skinned_glb(mesh, skeleton, weights, out)
        return {"mesh": out}
