"""The model registry: ``config/models.yaml`` plus the ``pocket3d.models`` entry-point group.

models.yaml keeps the seed design's shape, models grouped by feature::

    models:
      mesh_generation:
        my_model:
          class: "MyAdapter"          # an entry-point name, or "package.module:Class"
          vram_requirement: 8192      # MB
          supported_inputs: ["image"]
          supported_outputs: ["glb", "obj"]
          max_concurrent: 2
          devices: ["cuda"]           # optional, default ["cpu"]
          options: {weights: /srv/weights/my_model}   # optional, handed to the adapter

A plugin package that declares ``default_spec`` on its adapter class is registered without any YAML; a YAML
entry with the same id overrides it, and ``enabled: false`` turns a model off. pocket3d's own built-in models
register the same way, so an installed pocket3d offers them with no models.yaml at all. Models the file does not
list come after those it lists: other packages' first, then pocket3d's built-ins, the fallback of last resort.
``entry_points: false`` at the top of the file offers only the models it lists.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from pocket3d.config import ConfigError, format_validation_error
from pocket3d.errors import ErrorCode, Pocket3DError
from pocket3d.models.spec import INPUT_KINDS, Device, Feature, ModelAdapter, ModelSpec

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "pocket3d.models"


class ModelEntry(BaseModel):
    """One model in models.yaml; unknown keys are refused so a typo does not pass silently."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    class_: str = Field(alias="class")
    vram_requirement: int | None = Field(None, ge=0)
    supported_inputs: list[str] | None = None
    supported_outputs: list[str] | None = None
    max_concurrent: int | None = Field(None, ge=1)
    devices: list[str] | None = None
    description: str | None = None
    pinned: bool = False  # loaded at start, never evicted or unloaded for idleness
    preload: bool = False  # loaded in the background at start (GET /system/ready says warming until it is)
    textured: bool | None = None  # mesh generation: False when its meshes need a paint stage after it
    cutout: bool | None = None  # True when its images must have their background removed first
    paint_with: str | None = None  # the texture model that paints its meshes (default: the first that fits)
    enabled: bool = True
    options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("supported_inputs")
    @classmethod
    def _known_inputs(cls, v: list[str] | None) -> list[str] | None:
        if v is not None:
            unknown = sorted(set(v) - INPUT_KINDS)
            if unknown:
                raise ValueError(f"unknown input kinds {unknown}; use {sorted(INPUT_KINDS)}")
        return v

    @field_validator("devices")
    @classmethod
    def _known_devices(cls, v: list[str] | None) -> list[str] | None:
        if v is not None and set(v) - {"cpu", "cuda"}:
            raise ValueError("devices may name only 'cpu' and 'cuda'")
        return v


class ModelsFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # False: only the models listed here (a `class` may still name an entry point)
    entry_points: bool = True
    models: dict[Feature, dict[str, ModelEntry]] = Field(default_factory=dict)


@dataclass
class RegisteredModel:
    spec: ModelSpec
    adapter_cls: type[ModelAdapter] | None
    static_reasons: list[str] = field(default_factory=list)  # fixed at start-up: import errors, packages

    def params_model(self) -> type[BaseModel] | None:
        return self.adapter_cls.Params if self.adapter_cls else None


class Registry:
    def __init__(self, models: Iterable[RegisteredModel], problems: list[str] | None = None):
        self._models: dict[str, RegisteredModel] = {}
        for m in models:
            self._models[m.spec.id] = m
        self.problems = problems or []
        # Where availability is judged elsewhere (a gateway: by the cluster's workers, not this process), the
        # judge says why a model is unavailable and replaces the checks against this process's devices.
        self.judge: Callable[[RegisteredModel], list[str]] | None = None

    # -- building ---------------------------------------------------------------------------------------

    @classmethod
    def from_config(cls, models_file: Path | None, use_entry_points: bool = True) -> Registry:
        plugins, problems = _load_entry_points() if use_entry_points else ({}, [])
        entries = _read_models_file(models_file) if models_file is not None else ModelsFile()
        unlisted = plugins if entries.entry_points else {}
        models: list[RegisteredModel] = []
        seen: set[str] = set()
        for feature, group in entries.models.items():
            for model_id, entry in group.items():
                if model_id in seen:
                    raise ConfigError(f"{models_file}: models: id {model_id!r} appears under two features")
                seen.add(model_id)
                if entry.enabled:
                    models.append(_from_entry(model_id, feature, entry, plugins, models_file))
        # Other packages' models before pocket3d's own built-ins (they are there to be used), the built-ins in
        # their order of preference (entry points come in no useful order).
        ordered = sorted(unlisted.items(), key=lambda item: _offer_order(*item))
        for name, adapter in ordered:
            spec = getattr(adapter, "default_spec", None)
            if isinstance(spec, ModelSpec) and spec.id not in seen:
                seen.add(spec.id)
                models.append(RegisteredModel(spec, adapter, adapter.unavailable_reasons(spec)))
        return cls(models, problems)

    # -- queries ----------------------------------------------------------------------------------------

    def __contains__(self, model_id: str) -> bool:
        return model_id in self._models

    def get(self, model_id: str) -> RegisteredModel:
        return self._models[model_id]

    def all(self) -> list[RegisteredModel]:
        return list(self._models.values())

    def for_feature(self, feature: Feature) -> list[RegisteredModel]:
        return [m for m in self._models.values() if m.spec.feature == feature]

    def unavailable_reasons(self, model: RegisteredModel, devices: list[Device],
                            budget_of: Callable[[Device], float]) -> list[str]:
        if self.judge is not None:
            return self.judge(model)
        reasons = list(model.static_reasons)
        fitting = [d for d in devices if d.kind in model.spec.devices]
        if not fitting:
            reasons.append(f"no {' or '.join(model.spec.devices)} device on this node")
        elif not any(budget_of(d) >= model.spec.vram_requirement for d in fitting):
            largest = round(max(budget_of(d) for d in fitting))
            reasons.append(f"no device large enough: needs {model.spec.vram_requirement} MB, "
                           f"the largest {'/'.join(model.spec.devices)} device offers {max(largest, 0)} MB "
                           "to the scheduler (gpu.max_utilization, less gpu.memory_buffer)")
        return reasons

    def choose(self, feature: Feature, input_kinds: set[str], mesh_format: str | None,
               output_formats: str | Sequence[str],
               preference: str | None, devices: list[Device],
               budget_of: Callable[[Device], float]) -> RegisteredModel:
        """Pick the model for a request, or raise the 4xx/503 that tells the client why none fits (the main model
        of ``pipeline.plan``, which also finds the helper stages it needs)."""
        from pocket3d.models.pipeline import plan

        return plan(self, feature, input_kinds, mesh_format, output_formats, preference, devices, budget_of).model

    @staticmethod
    def _check_fit(model: RegisteredModel, input_kinds: set[str], mesh_format: str | None,
                   output_formats: str | Sequence[str]) -> None:
        spec = model.spec
        if not spec.accepts(input_kinds, mesh_format):
            given = sorted(input_kinds | ({mesh_format} if mesh_format else set()))
            raise Pocket3DError(ErrorCode.MODEL_INPUT_MISMATCH,
                                f"model {spec.id!r} takes {sorted(spec.supported_inputs)}, not {given}",
                                {"model": spec.id, "supported_inputs": sorted(spec.supported_inputs)},
                                hint=f"leave model_preference out to let the server pick a model that takes "
                                f"{given}, or pick one from GET /api/v1/system/models")
        wanted = [output_formats] if isinstance(output_formats, str) else list(output_formats)
        missing = [f for f in wanted if f not in spec.supported_outputs]
        if missing:
            raise Pocket3DError(ErrorCode.UNSUPPORTED_OUTPUT_FORMAT,
                                f"model {spec.id!r} writes {list(spec.supported_outputs)}, not {missing[0]!r}",
                                {"model": spec.id, "supported_outputs": list(spec.supported_outputs)},
                                hint=f"ask for one of {', '.join(spec.supported_outputs)}")


def _read_models_file(path: Path) -> ModelsFile:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"models file not found: {path}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    try:
        return ModelsFile.model_validate(data)
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, f"invalid model registry ({path})")) from None


def _load_entry_points() -> tuple[dict[str, type[ModelAdapter]], list[str]]:
    plugins: dict[str, type[ModelAdapter]] = {}
    problems: list[str] = []
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            obj = ep.load()
        except Exception as e:  # a broken plugin must not stop the server; it is reported instead
            problems.append(f"entry point {ep.name!r} ({ep.value}) failed to load: {type(e).__name__}: {e}")
            continue
        if not (isinstance(obj, type) and issubclass(obj, ModelAdapter)):
            problems.append(f"entry point {ep.name!r} ({ep.value}) is not a ModelAdapter subclass")
            continue
        plugins[ep.name] = obj
    for p in problems:
        log.warning(p)
    return plugins, problems


def _offer_order(name: str, adapter: type[ModelAdapter]) -> tuple[bool, int]:
    from pocket3d.models.builtin import PREFERENCE

    own = adapter.__module__.startswith("pocket3d.")
    return own, PREFERENCE.index(name) if own and name in PREFERENCE else len(PREFERENCE)


def _resolve_class(name: str, plugins: dict[str, type[ModelAdapter]]) -> type[ModelAdapter]:
    if name in plugins:
        return plugins[name]
    if ":" not in name:
        raise LookupError(f"adapter {name!r} is not installed: no '{ENTRY_POINT_GROUP}' entry point of that "
                          "name (or give 'package.module:Class')")
    module_name, _, attr = name.partition(":")
    try:
        obj = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as e:
        raise LookupError(f"adapter {name!r} could not be imported: {type(e).__name__}: {e}") from None
    if not (isinstance(obj, type) and issubclass(obj, ModelAdapter)):
        raise LookupError(f"adapter {name!r} is not a ModelAdapter subclass")
    return obj


def _from_entry(model_id: str, feature: Feature, entry: ModelEntry,
                plugins: dict[str, type[ModelAdapter]], path: Path | None) -> RegisteredModel:
    adapter: type[ModelAdapter] | None
    reasons: list[str] = []
    try:
        adapter = _resolve_class(entry.class_, plugins)
    except LookupError as e:
        adapter, reasons = None, [str(e)]
    base = adapter.default_spec if adapter is not None else None
    where = f"{path}: models.{feature.value}.{model_id}"

    def pick(yaml_value: Any, attr: str, fallback: Any = None) -> Any:
        if yaml_value is not None:
            return yaml_value
        if base is not None:
            return getattr(base, attr)
        if fallback is None:
            raise ConfigError(f"{where}.{attr}: required (the adapter declares no default)")
        return fallback

    spec = ModelSpec(
        id=model_id,
        feature=feature,
        supported_inputs=frozenset(pick(entry.supported_inputs, "supported_inputs")),
        supported_outputs=tuple(pick(entry.supported_outputs, "supported_outputs")),
        vram_requirement=pick(entry.vram_requirement, "vram_requirement", 0),
        max_concurrent=pick(entry.max_concurrent, "max_concurrent", 1),
        devices=tuple(pick(entry.devices, "devices", ["cpu"])),
        description=pick(entry.description, "description", ""),
        pinned=entry.pinned,
        preload=entry.preload,
        textured=pick(entry.textured, "textured", True),
        cutout=pick(entry.cutout, "cutout", False),
        paint_with=entry.paint_with if entry.paint_with is not None else (base.paint_with if base else None),
        options=dict(entry.options),
    )
    if base is not None and base.feature != feature:
        raise ConfigError(f"{where}: adapter {entry.class_!r} is a {base.feature.value} model")
    if adapter is not None:
        reasons.extend(adapter.unavailable_reasons(spec))
    return RegisteredModel(spec, adapter, reasons)
