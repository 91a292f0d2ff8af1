"""Model adapters and the registry that finds them (models.yaml plus the ``pocket3d.models`` entry points)."""

from pocket3d.models.registry import Registry, RegisteredModel
from pocket3d.models.spec import (
    VIEW_AZIMUTHS,
    Device,
    Feature,
    InputRejected,
    ModelAdapter,
    ModelSpec,
    NoParams,
    ProgressFn,
    RunInputs,
    StageCancelled,
    warn,
)

__all__ = ["VIEW_AZIMUTHS", "Device", "Feature", "InputRejected", "ModelAdapter", "ModelSpec", "NoParams",
           "ProgressFn", "Registry", "RegisteredModel", "RunInputs", "StageCancelled", "warn"]
