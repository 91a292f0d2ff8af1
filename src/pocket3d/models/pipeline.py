"""A request as a chain of stages: ``text_to_image -> remove_background -> generate_mesh -> paint_texture ->
export`` at the longest.

The registry's order picks the model that does the feature (the *main* model, the job's ``model_id``); the chain
grows around it by what its spec says it needs:

- text asked of a model that takes images (and no image given): a ``text_to_image`` stage draws the prompt first,
  when the registry has a text-to-image model at all;
- ``cutout`` (the main model's or its painter's) with images in play: a ``remove_background`` stage cuts them out;
- a mesh generator with ``textured: false``: a ``paint_texture`` stage follows, with ``paint_with`` or else the
  first available texture model that takes a mesh and the images; unless the request asked for the shape only
  (``texture: false``), which skips it.

Each helper is the first available model of its stage's feature, in models.yaml's order. A main model whose
helper is missing counts as unavailable, with the helper's reason, so the next model in the order is tried.
Every stage but export passes its products on: a mesh to the stages after it, an image (the drawn view, the
cut-out) to the next stages that take images (``scheduler.stage_io.materialize``).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pydantic import BaseModel

from pocket3d.errors import ErrorCode, Pocket3DError
from pocket3d.models.registry import RegisteredModel, Registry
from pocket3d.models.spec import Device, Feature, InputRejected

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
    params: BaseModel  # the client's parameters, validated by the main model


# The client's parameters validated for a model (raises the 422 INVALID_PARAMETERS when they do not fit).
ParamsOf = Callable[[RegisteredModel], BaseModel]


def plan(registry: Registry, feature: Feature, input_kinds: set[str], mesh_format: str | None,
         output_formats: str | Sequence[str], preference: str | None, devices: list[Device],
         budget_of: Callable[[Device], float], images: int = 0, text: str | None = None,
         params_of: ParamsOf | None = None, texture: bool = True) -> Plan:
    """The stages for a request, or the 4xx/503 that says why no model can serve it. ``output_formats``: the
    formats its result is to be written in (the main model must list each in its supported_outputs).

    Models that take the inputs as they are come first, in models.yaml's order; then those that need the prompt
    drawn. Each stage's ``check_request`` sees what that stage will get (the images it will be handed, a prompt
    only if it takes text), so a chain that is sure to fail is never queued: the next model is tried, and when
    none serves the request, the first refusal is the 422."""
    params_of = params_of or _default_params
    formats = [output_formats] if isinstance(output_formats, str) else list(output_formats)
    if preference:
        model = registry.get(preference) if preference in registry else None
        if model is None or model.spec.feature != feature:
            known = sorted(m.spec.id for m in registry.for_feature(feature))
            close = difflib.get_close_matches(preference, known, n=1, cutoff=0.7)
            raise Pocket3DError(ErrorCode.UNKNOWN_MODEL, f"no model {preference!r} for {feature.value}",
                                {"model": preference, "models_for_feature": known},
                                hint=(f"did you mean {close[0]!r}? " if close else "") +
                                f"GET /api/v1/system/models lists the models; for {feature.value}: "
                                f"{', '.join(known) or 'none'}. Leave model_preference out to let the server pick")
        candidates = [model]
    else:
        listed = registry.for_feature(feature)
        candidates = [m for m in listed if not _draws_text(m, input_kinds, registry)] + \
                     [m for m in listed if _draws_text(m, input_kinds, registry)]
    misfits: dict[str, str] = {}
    refused: dict[str, str] = {}
    unavailable: dict[str, list[str]] = {}
    helpers = _Helpers(registry, devices, budget_of)
    for model in candidates:
        draws = _draws_text(model, input_kinds, registry)
        kinds = (input_kinds - {"text"}) | {"image"} if draws else input_kinds
        try:
            Registry._check_fit(model, kinds, mesh_format, formats)
        except Pocket3DError as e:
            if preference:
                raise
            misfits[model.spec.id] = e.message
            continue
        reasons = registry.unavailable_reasons(model, devices, budget_of)
        stages: list[PlannedStage] = []
        if not reasons:
            stages, reasons = _chain(model, feature, kinds, draws, helpers, images=1 if draws else images, text=text,
                                     texture=texture)
        if reasons:
            unavailable[model.spec.id] = reasons
            if preference:
                raise Pocket3DError(ErrorCode.MODEL_UNAVAILABLE, f"model {preference!r} is unavailable: "
                                    + "; ".join(reasons), {"model": preference, "reasons": reasons},
                                    hint="leave model_preference out to let the server pick an available model; "
                                    "GET /api/v1/system/models says which are")
            continue
        params = params_of(model)
        rejected = _rejects(model, images=1 if draws else images, text=None if draws else text, params=params)
        if rejected is None:
            return Plan(model, tuple(stages), params)
        if preference:
            raise Pocket3DError(ErrorCode.INVALID_REQUEST, f"{rejected} (model {model.spec.id!r})",
                                {"model": model.spec.id})
        refused[model.spec.id] = rejected
    if refused:  # a model that could run refused these inputs: that, not another's missing GPU, is the answer
        first, why = next(iter(refused.items()))
        raise Pocket3DError(ErrorCode.INVALID_REQUEST, f"{why} (model {first!r})",
                            {"model": first, "models": refused})
    if not unavailable:
        raise Pocket3DError(ErrorCode.NO_MODEL_FOR_REQUEST,
                            f"no {feature.value} model takes inputs {sorted(input_kinds)} and writes "
                            f"{', '.join(map(repr, formats))}", {"models": misfits},
                            hint=_no_model_hint(registry, feature, formats))
    raise Pocket3DError(ErrorCode.MODEL_UNAVAILABLE,
                        f"every {feature.value} model that fits this request is unavailable",
                        {"models": unavailable}, hint="details.models says why for each; the server's operator can "
                        "install what is missing (`pocket3d models` lists it)")


def _no_model_hint(registry: Registry, feature: Feature, formats: list[str]) -> str:
    models = registry.for_feature(feature)
    writers = sorted({f for m in models for f in m.spec.supported_outputs})
    if writers and not set(formats) <= set(writers):
        return f"{feature.value} models here write {', '.join(writers)}: ask for one of those"
    takes = sorted({k for m in models for k in m.spec.supported_inputs})
    if takes:
        return f"{feature.value} models here take {', '.join(takes)}; GET /api/v1/system/models says which takes what"
    return "no model for this feature is registered here; GET /api/v1/system/models lists what is"


def chain_reasons(registry: Registry, model: RegisteredModel, devices: list[Device],
                  budget_of: Callable[[Device], float]) -> list[str]:
    """Why the stages every request for ``model`` needs cannot run (its painter, its background removal),
    for /system/models: a model listed available must not answer every request with 503."""
    helpers = _Helpers(registry, devices, budget_of)
    takes_images = bool(model.spec.supported_inputs & {"image", "multiview"})
    _, reasons = _chain(model, model.spec.feature, {"image"} if takes_images else set(model.spec.supported_inputs),
                        False, helpers, images=1 if takes_images else 0, text=None)
    return reasons


def model_reasons(registry: Registry, model: RegisteredModel, devices: list[Device],
                  budget_of: Callable[[Device], float]) -> list[str]:
    """Why the model cannot serve a request here: its own reasons, else those of the stages it needs."""
    reasons = registry.unavailable_reasons(model, devices, budget_of)
    if reasons or model.spec.feature.is_stage_only:
        return reasons
    return chain_reasons(registry, model, devices, budget_of)


def _default_params(model: RegisteredModel) -> BaseModel:
    assert model.adapter_cls is not None
    return model.adapter_cls.Params()


def _rejects(model: RegisteredModel, *, images: int, text: str | None, params: BaseModel) -> str | None:
    """The model's own refusal of what its stage will get, or None."""
    assert model.adapter_cls is not None
    try:
        model.adapter_cls.check_request(images=images, text=text, params=params)
    except InputRejected as e:
        return str(e)
    return None


def _draws_text(model: RegisteredModel, kinds: set[str], registry: Registry) -> bool:
    """True when the model is asked for text it cannot take, but takes an image the prompt can be drawn as, and
    the registry has a text-to-image model (without one, the model simply does not take text)."""
    takes = model.spec.supported_inputs
    return ("text" in kinds and not kinds & {"image", "multiview"} and "text" not in takes and "image" in takes
            and bool(registry.for_feature(Feature.TEXT_TO_IMAGE)))


def _chain(model: RegisteredModel, feature: Feature, kinds: set[str], draws: bool, helpers: _Helpers, *,
           images: int, text: str | None, texture: bool = True) -> tuple[list[PlannedStage], list[str]]:
    stages: list[PlannedStage] = []
    reasons: list[str] = []
    if draws:
        found = helpers.first(Feature.TEXT_TO_IMAGE, {"text"}, f"to draw the prompt for {model.spec.id}",
                              images=0, text=text)
        if isinstance(found, str):
            reasons.append(found)
        else:
            stages.append(PlannedStage(TEXT_TO_IMAGE_STAGE, found))
    painter: RegisteredModel | None = None
    if feature == Feature.MESH_GENERATION and not model.spec.textured and texture:
        image_kinds = kinds & {"image", "multiview"}
        found = helpers.painter(model, image_kinds | ({"text"} if "text" in kinds else set()), images, text)
        if isinstance(found, str):
            reasons.append(found)
        else:
            painter = found
    wants_cutout = model.spec.cutout or (painter is not None and painter.spec.cutout)
    if wants_cutout and kinds & {"image", "multiview"}:
        found = helpers.first(Feature.BACKGROUND_REMOVAL, {"multiview" if images > 1 else "image"},
                              f"to cut out the images for {model.spec.id}", images=images, text=None)
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

    def first(self, feature: Feature, kinds: set[str], why: str, *, images: int,
              text: str | None) -> RegisteredModel | str:
        """The first available model of ``feature`` that takes ``kinds``, or the reason there is none."""
        seen: list[str] = []
        for m in self.registry.for_feature(feature):
            if not m.spec.accepts(kinds):
                continue
            reasons = self.registry.unavailable_reasons(m, self.devices, self.budget_of)
            rejected = None if reasons else _rejects(m, images=images, text=text, params=_default_params(m))
            if not reasons and rejected is None:
                return m
            seen.append(f"{m.spec.id}: {', '.join(reasons) or rejected}")
        detail = f" ({'; '.join(seen)})" if seen else " (none registered)"
        return f"no available {feature.value} model {why}{detail}"

    def painter(self, shaper: RegisteredModel, kinds: set[str], images: int,
                text: str | None) -> RegisteredModel | str:
        """The texture model for an untextured shape: ``paint_with``, else the first that takes the mesh (GLB)
        and the request's images (or its text), and accepts them."""
        named = shaper.spec.paint_with
        if named:
            if named not in self.registry:
                return f"paint_with names {named!r}, which is not in the registry"
            candidates = [self.registry.get(named)]
        else:
            candidates = self.registry.for_feature(Feature.TEXTURE_GENERATION)
        seen: list[str] = []
        for m in candidates:
            if m.spec.feature != Feature.TEXTURE_GENERATION or not m.spec.accepts(kinds | {"mesh"}, "glb"):
                if named:
                    seen.append(f"{m.spec.id} is not a texture model that takes a GLB and {sorted(kinds)}")
                continue
            reasons = self.registry.unavailable_reasons(m, self.devices, self.budget_of)
            taken = text if "text" in m.spec.supported_inputs else None
            rejected = None if reasons else _rejects(m, images=images, text=taken, params=_default_params(m))
            if not reasons and rejected is None:
                return m
            seen.append(f"{m.spec.id}: {', '.join(reasons) or rejected}")
        detail = f" ({'; '.join(seen)})" if seen else ""
        return f"no texture model can paint the shapes of {shaper.spec.id}{detail}"
