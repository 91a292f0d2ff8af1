"""Background removal: U²-Netp for real (its weights, fetched by `make test` through `pocket3d weights fetch`), the
GrabCut fallback, and which of them the pipeline picks. bench/cutout.py measures both on every test image."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from client_helpers import IMAGES, Recorder
from PIL import Image

from pocket3d.models import weights
from pocket3d.models.builtin.cutout import GrabCutModel, U2NetCutoutModel
from pocket3d.models.pipeline import plan
from pocket3d.models.registry import Registry
from pocket3d.models.spec import Device, Feature, InputRejected, RunInputs

CPU = Device("cpu", "cpu", "CPU", 64_000)


def _noisy(name: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A test image on a background of random pixels, and its true mask (its own alpha)."""
    with Image.open(IMAGES / name) as im:
        rgba = np.array(im.convert("RGBA"))
    noise = np.random.default_rng(seed).integers(0, 256, rgba.shape[:2] + (3,), dtype=np.uint8)
    alpha = rgba[:, :, 3:4] / 255
    return (rgba[:, :, :3] * alpha + noise * (1 - alpha)).astype(np.uint8), rgba[:, :, 3] > 127


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


@pytest.fixture(scope="module")
def u2netp() -> U2NetCutoutModel:
    missing = weights.missing_reason("u2netp")
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"{missing} (make test fetches them)")
        pytest.skip(missing)
    model = U2NetCutoutModel(U2NetCutoutModel.default_spec)
    model.load(CPU)
    return model


def test_u2netp_cuts_the_object_out_of_a_noisy_background_better_than_grabcut(u2netp: U2NetCutoutModel) -> None:
    rgb, truth = _noisy("typical_creature_elephant.png")
    learned = _iou(u2netp.mask(rgb, "medium", lambda *_: None) > 127, truth)
    classical = _iou(GrabCutModel(GrabCutModel.default_spec).mask(rgb, "medium", lambda *_: None) > 127, truth)
    assert learned > 0.93 and learned > classical, (learned, classical)


def test_the_stage_writes_cutouts_and_passes_cutouts_through(u2netp: U2NetCutoutModel, tmp_path: Path) -> None:
    rgb, truth = _noisy("typical_humanoid_block_robot.png")
    Image.fromarray(rgb).save(tmp_path / "photo.png")
    already = IMAGES / "typical_misc_crate.png"
    messages: list[str | None] = []
    out = u2netp.run(RunInputs(work_dir=tmp_path, images=[tmp_path / "photo.png", already]), u2netp.Params(),
                     lambda _, message=None: messages.append(message))
    assert set(out) == {"image0", "image1"} and "reading the image (image 2 of 2)" in messages
    with Image.open(out["image0"]) as im:
        cut = np.array(im)
    assert cut.shape == (*truth.shape, 4) and _iou(cut[:, :, 3] > 127, truth) > 0.9
    with Image.open(out["image1"]) as im, Image.open(already) as original:
        assert np.array_equal(np.array(im), np.array(original.convert("RGBA"))), "a cut-out passes as it is"


def test_an_image_with_nothing_in_it_is_refused(tmp_path: Path) -> None:
    Image.new("RGB", (200, 200), (128, 128, 128)).save(tmp_path / "grey.png")
    with pytest.raises(InputRejected, match="no object found"):
        GrabCutModel(GrabCutModel.default_spec).run(RunInputs(work_dir=tmp_path, images=[tmp_path / "grey.png"]),
                                                    GrabCutModel.Params(), lambda *_: None)


def _cutout_model(monkeypatch: pytest.MonkeyPatch, weights_dir: Path) -> str:
    monkeypatch.setenv("POCKET3D_WEIGHTS_DIR", str(weights_dir))
    registry = Registry.from_config(None)  # the installed built-ins alone, as outside the checkout
    chosen = plan(registry, Feature.MESH_GENERATION, {"image"}, None, "glb", None, [CPU], lambda d: 64_000,
                  images=1)
    assert [s.name for s in chosen.stages] == ["remove_background", "generate_mesh"]
    return chosen.stages[0].model.spec.id


def test_the_pipeline_uses_u2netp_when_fetched_and_grabcut_otherwise(monkeypatch: pytest.MonkeyPatch,
                                                                     tmp_path: Path) -> None:
    fetched = None if weights.missing_reason("u2netp") else weights.path_of("u2netp")
    assert _cutout_model(monkeypatch, tmp_path) == "builtin_grabcut"
    (tmp_path / "u2netp.onnx").write_bytes(b"not the weights")
    assert _cutout_model(monkeypatch, tmp_path) == "builtin_grabcut", "a file of the wrong size does not count"
    if fetched is not None:
        (tmp_path / "u2netp.onnx").unlink()
        (tmp_path / "u2netp.onnx").symlink_to(fetched)
        assert _cutout_model(monkeypatch, tmp_path) == "builtin_u2netp"


def test_quality_high_says_when_u2net_is_not_fetched(u2netp: U2NetCutoutModel) -> None:
    if weights.missing_reason("u2net") is None:
        pytest.skip("U²-Net is fetched here: quality high uses it")
    rgb, truth = _noisy("typical_misc_crate.png")
    recorder = Recorder()
    alpha = u2netp.mask(rgb, "high", recorder)
    ((code, message),) = recorder.warnings
    assert code == "CUTOUT_FALLBACK" and "pocket3d weights fetch u2net" in message, message
    assert _iou(alpha > 127, truth) > 0.9, "and cuts out with U²-Netp meanwhile"


@pytest.mark.parametrize("name", ["u2netp", "grabcut"])
def test_a_cutout_reports_five_steps_or_more_that_a_person_can_follow(name: str, tmp_path: Path,
                                                                      request: pytest.FixtureRequest) -> None:
    """As every built-in model does (tests/test_builtin_models.py): GrabCut takes seconds on a large photo."""
    model = request.getfixturevalue("u2netp") if name == "u2netp" else GrabCutModel(GrabCutModel.default_spec)
    Image.fromarray(_noisy("typical_vehicle_biplane.png")[0]).save(tmp_path / "photo.png")
    recorder = Recorder()
    model.run(RunInputs(work_dir=tmp_path, images=[tmp_path / "photo.png"]), model.Params(), recorder)
    steps = [(fraction, message) for fraction, message in recorder.calls if message]
    assert len({f for f, _ in steps}) >= 5 and len({m for _, m in steps}) >= 5, steps
    assert [f for f, _ in steps] == sorted(f for f, _ in steps) and steps[-1][0] <= 1, "forwards, within 0-1"


def test_grabcut_standing_in_for_u2netp_says_so(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    Image.fromarray(_noisy("typical_misc_crate.png")[0]).save(tmp_path / "photo.png")
    grabcut = GrabCutModel(GrabCutModel.default_spec)

    def cut_out() -> list[tuple[str, str]]:
        recorder = Recorder()
        grabcut.run(RunInputs(work_dir=tmp_path, images=[tmp_path / "photo.png"]), grabcut.Params(), recorder)
        return recorder.warnings

    if weights.missing_reason("u2netp") is None:  # make test fetches them
        assert cut_out() == [], "GrabCut chosen while U²-Netp could run is no fallback"
    monkeypatch.setenv("POCKET3D_WEIGHTS_DIR", str(tmp_path / "no-weights"))
    ((code, message),) = cut_out()
    assert code == "CUTOUT_FALLBACK" and "GrabCut" in message and "pocket3d weights fetch" in message, message
