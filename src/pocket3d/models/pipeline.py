"""A request as a chain of stages: ``text_to_image -> remove_background -> generate_mesh -> paint_texture ->
export`` at the longest.

The registry's order picks the model that does the feature (the *main* model, the job's ``model_id``); the chain
grows around it by what its spec says it needs:

- text asked of a model that takes images (and no image given): a ``text_to_image`` stage draws the prompt first,
  when the registry has a text-to-image model at all;
- ``cutout`` (the main model's or its painter's) with images in play: a ``remove_background`` stage cuts them out;
- a mesh generator with ``textured: false``: a ``paint_texture`` stage follows, with ``paint_with`` or else the
  first available texture model that takes a mesh and the images.

Each helper is the first available model of its stage's feature, in models.yaml's order. A main model whose
helper is missing counts as unavailable, with the helper's reason, so the next model in the order is tried.
Every stage but export passes its products on: a mesh to the stages after it, an image (the drawn view, the
cut-out) to the next stages that take images (``scheduler.stage_io.materialize``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pocket3d.errors import ErrorCode, Pocket3DError
from pocket3d.models.registry import RegisteredModel, Registry
from pocket3d.models.spec import Device, Feature

MAIN_STAGE = {
    Feature.MESH_GENERATION: "generate_mesh",
    Feature.TEXTURE_GENERATION: "paint_texture",
    Feature.SEGMENTATION: "segment",
    Feature.AUTO_RIGGING: "rig",
}
TEXT_TO_IMAGE_STAGE = "text_to_image"
BACKGROUND_STAGE = "remove_background"
PAINT_STAGE = "paint_texture"

# Shares of the job's progress bar, by stage (the export stage's is the scheduler's; they are normalised).
STAGE_WEIGHTS = {TEXT_TO_IMAGE_STAGE: 0.15, BACKGROUND_STAGE: 0.05, "main": 0.6, PAINT_STAGE: 0.3}


@dataclass(frozen=True)
class PlannedStage:
    name: str
    model: RegisteredModel
    main: bool = False  # takes the client's parameters; the helpers run on their defaults and the quality


@dataclass(frozen=True)
class Plan:
    model: RegisteredModel  # the main model
    stages: tuple[PlannedStage, ...]
    images_for_main: int  # the images the main model will see (a drawn view counts), for its check_request


def plan(registry: Registry, feature: Feature, input_kinds: set[str], mesh_format: str | None, output_format: str,
         preference: str | None, devices: list[Device], budget_of: Callable[[Device], float],
         images: int = 0) -> Plan:
    """The stages for a request, or the 4xx/503 that says why no model can serve it."""
    if preference:
        model = registry._models.get(preference)
        if model is None or model.spec.feature != feature:
            known = sorted(m.spec.id for m in registry.for_feature(feature))
            raise Pocket3DError(ErrorCode.UNKNOWN_MODEL, f"no model {preference!r} for {feature.value}",
                                {"model": preference, "models_for_feature": known})
        candidates = [model]
    else:
        candidates = registry.for_feature(feature)
    misfits: dict[str, str] = {}
    unavailable: dict[str, list[str]] = {}
    for model in candidates:
        draws = _draws_text(model, input_kinds, registry)
        kinds = (input_kinds - {"text"}) | {"image"} if draws else input_kinds
        try:
            Registry._check_fit(model, kinds, mesh_format, output_format)
        except Pocket3DError as e:
            if preference:
                raise
            misfits[model.spec.id] = e.message
            continue
        helpers = _Helpers(registry, devices, budget_of)
        reasons = registry.unavailable_reasons(model, devices, budget_of)
        stages: list[PlannedStage] = []
        if not reasons:
            stages, reasons = _chain(model, feature, kinds, draws, helpers)
        if not reasons:
            return Plan(model, tuple(stages), images_for_main=1 if draws else images)
        unavailable[model.spec.id] = reasons
        if preference:
            raise Pocket3DError(ErrorCode.MODEL_UNAVAILABLE, f"model {preference!r} is unavailable: "
                                + "; ".join(reasons), {"model": preference, "reasons": reasons})
    if not unavailable:
        raise Pocket3DError(ErrorCode.NO_MODEL_FOR_REQUEST,
                            f"no {feature.value} model takes inputs {sorted(input_kinds)} and writes "
                            f"{output_format!r}", {"models": misfits})
    raise Pocket3DError(ErrorCode.MODEL_UNAVAILABLE,
                        f"every {feature.value} model that fits this request is unavailable",
                        {"models": unavailable})


def _draws_text(model: RegisteredModel, kinds: set[str], registry: Registry) -> bool:
    """True when the model is asked for text it cannot take, but takes an image the prompt can be drawn as, and
    the registry has a text-to-image model (without one, the model simply does not take text)."""
    takes = model.spec.supported_inputs
    return ("text" in kinds and not kinds & {"image", "multiview"} and "text" not in takes and "image" in takes
            and bool(registry.for_feature(Feature.TEXT_TO_IMAGE)))


def _chain(model: RegisteredModel, feature: Feature, kinds: set[str], draws: bool,
           helpers: _Helpers) -> tuple[list[PlannedStage], list[str]]:
    stages: list[PlannedStage] = []
    reasons: list[str] = []
    if draws:
        found = helpers.first(Feature.TEXT_TO_IMAGE, {"text"}, f"to draw the prompt for {model.spec.id}")
        if isinstance(found, str):
            reasons.append(found)
        else:
            stages.append(PlannedStage(TEXT_TO_IMAGE_STAGE, found))
    painter: RegisteredModel | None = None
    if feature == Feature.MESH_GENERATION and not model.spec.textured:
        image_kinds = kinds & {"image", "multiview"}
        found = helpers.painter(model, image_kinds | ({"text"} if "text" in kinds else set()))
        if isinstance(found, str):
            reasons.append(found)
        else:
            painter = found
    wants_cutout = model.spec.cutout or (painter is not None and painter.spec.cutout)
    if wants_cutout and kinds & {"image", "multiview"}:
        found = helpers.first(Feature.BACKGROUND_REMOVAL, {"image"}, f"to cut out the images for {model.spec.id}")
        if isinstance(found, str):
            reasons.append(found)
        else:
            stages.append(PlannedStage(BACKGROUND_STAGE, found))
    stages.append(PlannedStage(MAIN_STAGE[feature], model, main=True))
    if painter is not None:
        stages.append(PlannedStage(PAINT_STAGE, painter))
    return stages, reasons


class _Helpers:
    def __init__(self, registry: Registry, devices: list[Device], budget_of: Callable[[Device], float]):
        self.registry, self.devices, self.budget_of = registry, devices, budget_of

    def first(self, feature: Feature, kinds: set[str], why: str) -> RegisteredModel | str:
        """The first available model of ``feature`` that takes ``kinds``, or the reason there is none."""
        seen: list[str] = []
        for m in self.registry.for_feature(feature):
            if not m.spec.accepts(kinds):
                continue
            reasons = self.registry.unavailable_reasons(m, self.devices, self.budget_of)
            if not reasons:
                return m
            seen.append(f"{m.spec.id}: {', '.join(reasons)}")
        detail = f" ({'; '.join(seen)})" if seen else " (none registered)"
        return f"no available {feature.value} model {why}{detail}"

    def painter(self, shaper: RegisteredModel, kinds: set[str]) -> RegisteredModel | str:
        """The texture model for an untextured shape: ``paint_with``, else the first that takes the mesh (GLB)
        and the request's images (or its text)."""
        named = shaper.spec.paint_with
        if named:
            if named not in self.registry:
                return f"paint_with names {named!r}, which is not in the registry"
            m = self.registry.get(named)
            reasons = self.registry.unavailable_reasons(m, self.devices, self.budget_of)
            return f"its painter {named} is unavailable: {', '.join(reasons)}" if reasons else m
        for m in self.registry.for_feature(Feature.TEXTURE_GENERATION):
            if m.spec.accepts(kinds | {"mesh"}, "glb") and not self.registry.unavailable_reasons(
                    m, self.devices, self.budget_of):
                return m
        return f"no available texture_generation model to paint the shapes of {shaper.spec.id}"
