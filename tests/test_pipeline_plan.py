"""The planner (pocket3d.models.pipeline): which stages a request becomes, from the models' specs, and why a
model whose chain cannot run is unavailable. In-process, on registries of TEST-ONLY planned models."""

from __future__ import annotations

from pathlib import Path

import pytest

from pocket3d.errors import ErrorCode, Pocket3DError
from pocket3d.models.pipeline import model_reasons, plan
from pocket3d.models.registry import Registry
from pocket3d.models.spec import Device, Feature

CPU = [Device("cpu", "cpu", "CPU", 16000)]
M = "p3d_planmodels"


def _budget(device: Device) -> float:
    return device.memory_total


def registry(tmp_path: Path, text: str) -> Registry:
    path = tmp_path / "models.yaml"
    path.write_text(text)
    return Registry.from_config(path, use_entry_points=False)


def entry(cls: str, inputs: list[str], outputs: list[str] | None = None, **extra: object) -> str:
    lines = [f'      class: "{M}:{cls}"', f"      supported_inputs: {inputs}",
             f"      supported_outputs: {outputs or ['glb']}"]
    lines += [f"      {k}: {v}" for k, v in extra.items()]
    return "\n".join(lines)


def yaml(mesh: str, texture: str = "", text_to_image: bool = True, cutout_model: bool = True) -> str:
    out = f"models:\n  mesh_generation:\n{mesh}\n"
    if texture:
        out += f"  texture_generation:\n{texture}\n"
    if text_to_image:
        out += f"  text_to_image:\n    t2i:\n{entry('AnyInputTestModel', ['text'], ['png'])}\n"
    if cutout_model:
        out += f"  background_removal:\n    cut:\n{entry('AnyInputTestModel', ['image', 'multiview'], ['png'])}\n"
    return out


def stages(p) -> list[tuple[str, str]]:  # noqa: ANN001 - a Plan
    return [(s.name, s.model.spec.id) for s in p.stages]


def make_plan(reg: Registry, kinds: set[str], preference: str | None = None, images: int = 0,
              text: str | None = None):  # noqa: ANN201
    return plan(reg, Feature.MESH_GENERATION, kinds, None, "glb", preference, CPU, _budget, images=images, text=text)


SHAPE = entry("AnyInputTestModel", ["image"], textured="false", cutout="true", paint_with="painter")
PAINTER = f"    painter:\n{entry('AnyInputTestModel', ['mesh', 'image', 'multiview'])}"


def test_an_untextured_shape_is_cut_out_first_and_painted_after(tmp_path: Path) -> None:
    reg = registry(tmp_path, yaml(f"    shape:\n{SHAPE}", PAINTER))
    p = make_plan(reg, {"image"}, images=1)
    assert stages(p) == [("remove_background", "cut"), ("generate_mesh", "shape"), ("paint_texture", "painter")]


def test_text_prefers_a_model_that_takes_text_then_draws_it_for_an_image_model(tmp_path: Path) -> None:
    text_model = entry("AnyInputTestModel", ["text"])
    reg = registry(tmp_path, yaml(f"    shape:\n{SHAPE}\n    texty:\n{text_model}", PAINTER))
    assert stages(make_plan(reg, {"text"}, text="a chair")) == [("generate_mesh", "texty")]
    drawn = make_plan(reg, {"text"}, preference="shape", text="a chair")
    assert stages(drawn) == [("text_to_image", "t2i"), ("remove_background", "cut"), ("generate_mesh", "shape"),
                             ("paint_texture", "painter")]


def test_a_model_that_refuses_prompts_still_serves_a_drawn_one(tmp_path: Path) -> None:
    no_text = entry("NoTextTestModel", ["image"], cutout="true")
    reg = registry(tmp_path, yaml(f"    sam:\n{no_text}"))
    assert stages(make_plan(reg, {"text"}, text="a chair"))[0] == ("text_to_image", "t2i")


def test_without_a_text_to_image_model_an_image_model_does_not_take_text(tmp_path: Path) -> None:
    reg = registry(tmp_path, yaml(f"    shape:\n{SHAPE}", PAINTER, text_to_image=False))
    with pytest.raises(Pocket3DError) as e:
        make_plan(reg, {"text"}, preference="shape", text="a chair")
    assert e.value.code == ErrorCode.MODEL_INPUT_MISMATCH


def test_paint_with_naming_a_model_that_cannot_paint_makes_the_shape_unavailable_and_says_so(tmp_path: Path) -> None:
    wrong = entry("AnyInputTestModel", ["text"])  # a mesh model named as the painter
    reg = registry(tmp_path, yaml(f"    shape:\n{SHAPE}\n    painter:\n{wrong}"))
    reasons = model_reasons(reg, reg.get("shape"), CPU, _budget)
    assert reasons and "painter is not a texture model" in reasons[0]
    with pytest.raises(Pocket3DError) as e:
        make_plan(reg, {"image"}, preference="shape", images=1)
    assert e.value.code == ErrorCode.MODEL_UNAVAILABLE and "painter" in e.value.message


def test_a_painter_that_takes_one_image_sends_several_views_to_the_next_model(tmp_path: Path) -> None:
    multiview_shape = entry("AnyInputTestModel", ["image", "multiview"], textured="false", cutout="true",
                            paint_with="one_view_painter")
    hull = entry("AnyInputTestModel", ["multiview"])
    painter = f"    one_view_painter:\n{entry('OneImageTestModel', ['mesh', 'image', 'multiview'])}"
    reg = registry(tmp_path, yaml(f"    mv:\n{multiview_shape}\n    hull:\n{hull}", painter))
    assert stages(make_plan(reg, {"multiview"}, images=3)) == [("generate_mesh", "hull")]
    assert stages(make_plan(reg, {"image"}, images=1))[-1] == ("paint_texture", "one_view_painter")
    with pytest.raises(Pocket3DError) as e:
        make_plan(reg, {"multiview"}, preference="mv", images=3)
    assert e.value.code == ErrorCode.MODEL_UNAVAILABLE and "takes one image, got 3" in e.value.message


def test_a_shape_without_any_background_removal_is_unavailable_with_the_reason(tmp_path: Path) -> None:
    reg = registry(tmp_path, yaml(f"    shape:\n{SHAPE}", PAINTER, cutout_model=False))
    reasons = model_reasons(reg, reg.get("shape"), CPU, _budget)
    assert reasons == ["no available background_removal model to cut out the images for shape (none registered)"]
