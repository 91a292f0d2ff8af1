"""The built-in visual hull: silhouettes of known shapes give those shapes back; views that disagree are found."""

from __future__ import annotations

import numpy as np
import pytest
import trimesh
from client_helpers import SHARED, Recorder, is_closed
from PIL import Image

from pocket3d.models import InputRejected, RunInputs
from pocket3d.models.builtin.multiview import (
    MultiViewParams,
    VisualHullModel,
    consistent_hull,
    render_silhouette,
    visual_hull,
)
from pocket3d.models.builtin.texturing import View


def _standing(mesh: trimesh.Trimesh) -> trimesh.Trimesh:
    mesh.apply_translation((0, -mesh.bounds[0, 1], 0))
    return mesh


def test_a_box_seen_from_front_and_side_comes_back_a_box() -> None:
    box = _standing(trimesh.creation.box((0.6, 1.0, 0.3)))
    hull = visual_hull([View(render_silhouette(box, a), a) for a in (0, 90)], grid=96)
    assert hull.is_watertight
    assert np.allclose(hull.bounds, box.bounds, atol=0.03)
    assert hull.volume == pytest.approx(box.volume, rel=0.1)


def test_a_cone_carved_from_two_views_is_the_pyramid_they_allow() -> None:
    """Front and side see triangles; the hull is the square pyramid (volume a third of its box), not a prism
    (a half) or a box: carving really intersects the views."""
    cone = trimesh.creation.cone(0.3, 1.0)
    cone.apply_transform(trimesh.transformations.rotation_matrix(-np.pi / 2, (1, 0, 0)))
    hull = visual_hull([View(render_silhouette(cone, a), a) for a in (0, 90)], grid=96)
    assert hull.volume == pytest.approx(0.6 * 0.6 * 1.0 / 3, rel=0.12)


def test_azimuths_place_the_views() -> None:
    """An L-shaped block seen front and side: the side view at 90 or 270 degrees puts the step at the back or
    the front, and the hull follows."""
    block = _l_block()
    views = [View(render_silhouette(block, 0), 0), View(render_silhouette(block, 90), 90)]
    hull = visual_hull(views, grid=80)
    top = hull.vertices[hull.vertices[:, 1] > 0.9]
    assert top[:, 2].mean() < -0.05, "the top sits at the back"
    flipped = visual_hull([views[0], View(views[1].image, 270)], grid=80)
    assert flipped.vertices[flipped.vertices[:, 1] > 0.9][:, 2].mean() > 0.05


def test_a_view_that_disagrees_is_left_out() -> None:
    box = _standing(trimesh.creation.box((0.6, 1.0, 0.3)))
    good = [View(render_silhouette(box, a), a) for a in (0, 90)]
    # A view of something else: a short, wide blob in the upper half of the picture.
    odd = np.zeros((256, 256, 4), np.uint8)
    odd[20:60, 30:226, 3] = 255
    odd[200:240, 120:136, 3] = 255
    hull, left_out = consistent_hull(good + [View(odd, 180)], grid=64)
    assert left_out == [2]
    assert hull.bounds[1, 1] - hull.bounds[0, 1] > 0.95


def _l_block() -> trimesh.Trimesh:
    lower = trimesh.creation.box((0.4, 0.5, 0.4))
    lower.apply_translation((0, 0.25, 0))
    upper = trimesh.creation.box((0.4, 0.5, 0.2))
    upper.apply_translation((0, 0.75, -0.1))  # the upper half only at the back (-z)
    return trimesh.util.concatenate([lower, upper])


def test_named_views_take_their_azimuths_and_a_view_left_out_is_a_warning(tmp_path) -> None:
    """The request's view names (front, left, back, right) place the views as azimuths 0, 90, 180, 270 would; a
    view that disagrees with the others is left out, and the job is told which."""
    block = _l_block()
    front, side = tmp_path / "front.png", tmp_path / "side.png"
    Image.fromarray(render_silhouette(block, 0)).save(front)
    Image.fromarray(render_silhouette(block, 90)).save(side)
    tops = {}
    for name in ("left", "right"):
        (tmp_path / name).mkdir()
        out = VisualHullModel(None).run(RunInputs(work_dir=tmp_path / name, images=[front, side], quality="low",
                                                  texture_resolution=128, view_names=["front", name]),
                                        MultiViewParams(), Recorder())
        mesh = trimesh.load(out["mesh"], force="mesh")
        tops[name] = mesh.vertices[mesh.vertices[:, 1] > 0.9][:, 2].mean()
    assert tops["left"] < -0.05 < 0.05 < tops["right"], tops
    # character_1 shows the character's right side, character_3 its left from behind: named left and back, they
    # contradict each other and the front, and carving with all three would cut the figure in two
    views = [SHARED / "multiview" / f"character_{i}.png" for i in (2, 1, 3)]
    recorder = Recorder()
    VisualHullModel(None).run(RunInputs(work_dir=tmp_path, images=views, quality="low", texture_resolution=128,
                                        view_names=["front", "left", "back"]), MultiViewParams(), recorder)
    (warning,) = recorder.warnings
    assert warning[0] == "VIEW_LEFT_OUT" and "view (azimuth" in warning[1], warning


def test_the_shared_three_views_make_a_textured_standing_figure(tmp_path) -> None:
    views = [SHARED / "multiview" / f"character_{i}.png" for i in (1, 2, 3)]
    out = VisualHullModel(None).run(RunInputs(work_dir=tmp_path, images=views, quality="low",
                                              texture_resolution=512),
                                    MultiViewParams(), lambda fraction, message=None: None)
    mesh = trimesh.load(out["mesh"], force="mesh")
    assert is_closed(mesh) and len(mesh.faces) > 1000
    extent = mesh.bounds[1] - mesh.bounds[0]
    assert extent[1] > 2.5 * max(extent[0], extent[2])
    texture = np.asarray(mesh.visual.material.baseColorTexture.convert("RGB")).reshape(-1, 3)
    # The character's colours reach the texture: dark trousers, pink shoes, a teal jacket; not one flat colour.
    assert texture.std(axis=0).mean() > 20


@pytest.mark.parametrize("count,azimuths,message", [(1, None, "2 to 4 views"), (5, None, "2 to 4 views"),
                                                     (2, [0.0, 90.0, 180.0], "one per image")])
def test_wrong_view_counts_are_refused(tmp_path, count: int, azimuths, message: str) -> None:
    image = tmp_path / "view.png"
    Image.fromarray(render_silhouette(_standing(trimesh.creation.box((0.5, 1, 0.5))), 0)).save(image)
    params = MultiViewParams.model_construct(azimuths=azimuths, grid=None)
    with pytest.raises(InputRejected, match=message):
        VisualHullModel(None).run(RunInputs(work_dir=tmp_path, images=[image] * count), params,
                                  lambda fraction, message=None: None)
