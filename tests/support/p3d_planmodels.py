"""TEST-ONLY adapters for the planner tests (tests/test_pipeline_plan.py): they are planned, never run.

Each stands for a kind of real model by what its spec and ``check_request`` say, nothing more.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel

from pocket3d.models.spec import InputRejected, ModelAdapter, ProgressFn, RunInputs


class _PlannedOnly(ModelAdapter):
    def run(self, inputs: RunInputs, params: BaseModel, progress: ProgressFn) -> dict[str, Path]:
        raise AssertionError("planner test models are never run")


class AnyInputTestModel(_PlannedOnly):
    """Takes what its YAML says it takes."""


class OneImageTestModel(_PlannedOnly):
    """Refuses more than one image, as Hunyuan3D-2 paint from PyPI does."""

    @classmethod
    def check_request(cls, *, images: int, text: str | None, params: BaseModel) -> None:
        if images > 1:
            raise InputRejected(f"takes one image, got {images}")


class NoTextTestModel(_PlannedOnly):
    """Refuses a prompt, as SAM 3D does: it must still serve text drawn as an image."""

    @classmethod
    def check_request(cls, *, images: int, text: str | None, params: BaseModel) -> None:
        if text:
            raise InputRejected("takes no text prompt")
