"""The model registry: models.yaml, entry-point plugins, availability with reasons, and model choice."""

from __future__ import annotations

import json
import textwrap
from functools import partial
from pathlib import Path

import pytest
from server import cli

from pocket3d.config import ConfigError, GpuSettings
from pocket3d.errors import ErrorCode, Pocket3DError
from pocket3d.models import Device, Feature, Registry
from pocket3d.scheduler.devices import budget_mb

CPU = [Device(id="cpu", kind="cpu", name="test", memory_total=16000)]
GPU24 = [*CPU, Device(id="cuda:0", kind="cuda", name="test", memory_total=24576)]


def registry(tmp_path: Path, text: str) -> Registry:
    path = tmp_path / "models.yaml"
    path.write_text(textwrap.dedent(text))
    return Registry.from_config(path, use_entry_points=False)


@pytest.fixture(autouse=True)
def _testmodels_on_path(monkeypatch) -> None:
    monkeypatch.syspath_prepend(str(Path(__file__).parent / "support"))


def _whole(device) -> float:  # noqa: ANN001
    return device.memory_total


def test_availability_reasons(tmp_path) -> None:
    reg = registry(tmp_path, """
        models:
          mesh_generation:
            cpu_model: {class: "p3d_testmodels:HeightfieldTestModel", supported_inputs: [image], supported_outputs: [glb]}
            big_gpu: {class: "p3d_testmodels:HeightfieldTestModel", supported_inputs: [image], supported_outputs: [glb],
                      devices: [cuda], vram_requirement: 40000}
            missing: {class: "not_a_module:Adapter", supported_inputs: [image], supported_outputs: [glb]}
            no_weights: {class: "p3d_testmodels:HeightfieldTestModel", supported_inputs: [image],
                         supported_outputs: [glb], options: {weights: /nonexistent/weights/dir}}
        """)
    budget = partial(budget_mb, gpu=GpuSettings(memory_buffer=1024, max_utilization=0.9))
    reasons = {m.spec.id: reg.unavailable_reasons(m, GPU24, budget) for m in reg.all()}
    assert reasons["cpu_model"] == []
    assert reasons["big_gpu"] == ["no device large enough: needs 40000 MB, the largest cuda device offers 21094 MB "
                                  "to the scheduler (gpu.max_utilization, less gpu.memory_buffer)"]
    assert "No module named 'not_a_module'" in reasons["missing"][0]
    assert reasons["no_weights"] == ["weights not found at /nonexistent/weights/dir"]
    assert reg.unavailable_reasons(reg.get("big_gpu"), CPU, budget) == ["no cuda device on this node"]


def test_choose_picks_the_first_available_fitting_model(tmp_path) -> None:
    reg = registry(tmp_path, """
        models:
          mesh_generation:
            gpu_first: {class: "p3d_testmodels:HeightfieldTestModel", supported_inputs: [image], supported_outputs: [glb],
                        devices: [cuda]}
            text_only: {class: "p3d_testmodels:FailingTestModel", supported_inputs: [text], supported_outputs: [glb]}
            cpu_image: {class: "p3d_testmodels:HeightfieldTestModel", supported_inputs: [image], supported_outputs: [glb, obj]}
        """)
    assert reg.choose(Feature.MESH_GENERATION, {"image"}, None, "glb", None, CPU, _whole).spec.id == "cpu_image"
    assert reg.choose(Feature.MESH_GENERATION, {"image"}, None, "glb", None, GPU24, _whole).spec.id == "gpu_first"
    with pytest.raises(Pocket3DError) as e:
        reg.choose(Feature.MESH_GENERATION, {"image", "text"}, None, "glb", None, CPU, _whole)
    assert e.value.code == ErrorCode.NO_MODEL_FOR_REQUEST
    with pytest.raises(Pocket3DError) as e:
        reg.choose(Feature.MESH_GENERATION, {"image"}, None, "obj", "gpu_first", CPU, _whole)
    assert e.value.code == ErrorCode.UNSUPPORTED_OUTPUT_FORMAT
    with pytest.raises(Pocket3DError) as e:
        reg.choose(Feature.SEGMENTATION, {"mesh"}, "glb", "glb", "cpu_image", CPU, _whole)
    assert e.value.code == ErrorCode.UNKNOWN_MODEL


def test_same_id_twice_and_missing_fields_are_config_errors(tmp_path) -> None:
    with pytest.raises(ConfigError, match="appears under two features"):
        registry(tmp_path, """
            models:
              mesh_generation: {m: {class: "p3d_testmodels:HeightfieldTestModel", supported_inputs: [image], supported_outputs: [glb]}}
              segmentation: {m: {class: "p3d_testmodels:SubdivideTestModel", supported_inputs: [mesh], supported_outputs: [glb]}}
            """)
    with pytest.raises(ConfigError, match=r"models\.mesh_generation\.m\.supported_outputs: required"):
        registry(tmp_path, """
            models:
              mesh_generation: {m: {class: "p3d_testmodels:HeightfieldTestModel", supported_inputs: [image]}}
            """)


def test_a_plugin_package_adds_a_model_through_its_entry_point(tmp_path) -> None:
    """A real installed-distribution layout (dist-info with entry_points.txt) found by importlib.metadata."""
    site = tmp_path / "site"
    (site / "acme_models").mkdir(parents=True)
    (site / "acme_models" / "__init__.py").write_text(textwrap.dedent("""
        from pocket3d.models import Feature, ModelSpec
        from p3d_testmodels import SubdivideTestModel

        class AcmeSegmenter(SubdivideTestModel):
            requires = ("acme_cuda_kernels",)
            default_spec = ModelSpec(id="acme-seg", feature=Feature.SEGMENTATION,
                                     supported_inputs=frozenset({"mesh"}), supported_outputs=("glb",))

        class Broken:
            pass
        """))
    dist = site / "acme_models-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-models\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[pocket3d.models]\nacme = acme_models:AcmeSegmenter\n"
                                           "broken = acme_models:Broken\n")
    empty = tmp_path / "models.yaml"
    empty.write_text("models: {}\n")
    out = cli(tmp_path / "data", "models", "--json", models=empty,
              env={"PYTHONPATH": f"{site}:{Path(__file__).parent / 'support'}"})
    listing = json.loads(out.stdout)
    acme, *builtins = listing["models"]  # another package's models before pocket3d's own built-ins
    assert acme["id"] == "acme-seg" and acme["feature"] == "segmentation"
    assert builtins and all(m["id"].startswith("builtin_") for m in builtins)
    assert acme["available"] is False and acme["reasons"] == ["python package 'acme_cuda_kernels' is not installed"]
    assert any("broken" in p and "not a ModelAdapter" in p for p in listing["problems"])
