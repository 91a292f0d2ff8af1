"""The built-in CPU models, through the HTTP API on a real server and on their own, on the shared test data."""

from __future__ import annotations

import io

import httpx
import numpy as np
import pytest
import trimesh
from client_helpers import (
    IMAGES,
    MESHES,
    SHARED,
    Recorder,
    assert_valid_gltf,
    finish,
    upload,
)
from PIL import Image

from pocket3d.models import InputRejected
from pocket3d.models.builtin.image_to_mesh import (
    SilhouetteInflationModel,
    foreground_mask,
)
from pocket3d.models.builtin.multiview import VisualHullModel
from pocket3d.models.builtin.rigging import GeometricRiggingModel
from pocket3d.models.builtin.segmentation import GeometricSegmentationModel
from pocket3d.models.builtin.text_to_mesh import ProceduralTextModel
from pocket3d.models.builtin.texturing import ProjectionTextureModel
from pocket3d.models.spec import RunInputs

VIEWS = [SHARED / "multiview" / f"character_{i}.png" for i in (2, 3, 1)]
BUILTINS = {  # each built-in model on an input it takes
    "silhouette": (SilhouetteInflationModel, {"images": [IMAGES / "T.png"]}),
    "visual_hull": (VisualHullModel, {"images": VIEWS, "view_names": ["front", "left", "right"]}),
    "procedural": (ProceduralTextModel, {"text": "a red wooden chair"}),
    "painting from text": (ProjectionTextureModel, {"mesh": MESHES / "typical_creature_elephant.obj",
                                                    "text": "green stone"}),
    "painting from an image": (ProjectionTextureModel, {"mesh": MESHES / "typical_creature_elephant.obj",
                                                        "images": [IMAGES / "typical_creature_elephant.png"]}),
    "segmentation": (GeometricSegmentationModel, {"mesh": MESHES / "typical_creature_elephant.obj"}),
    "rigging": (GeometricRiggingModel, {"mesh": MESHES / "typical_humanoid_goblin.obj"}),
}


@pytest.mark.parametrize("name", list(BUILTINS))
def test_every_builtin_reports_five_steps_or_more_that_a_person_can_follow(name: str, tmp_path) -> None:
    adapter, inputs = BUILTINS[name]
    model = adapter(None)
    recorder = Recorder()
    model.run(RunInputs(work_dir=tmp_path, quality="low", texture_resolution=256, **inputs), model.Params(),
              recorder)
    steps = [(fraction, message) for fraction, message in recorder.calls if message]
    fractions = [fraction for fraction, _ in steps]
    assert len(set(fractions)) >= 5, steps
    assert fractions == sorted(fractions) and 0 <= fractions[0] and fractions[-1] <= 1, "forwards, within 0-1"
    assert len({message for _, message in steps}) >= 5, "each step says what it does"


@pytest.mark.parametrize("image", ["typical_creature_elephant.png", "typical_vehicle_biplane.png", "T.png"])
def test_image_to_mesh_makes_a_closed_textured_mesh(client: httpx.Client, tmp_path, image: str) -> None:
    file_id = upload(client, IMAGES / image)["file_id"]
    job = finish(client, "/mesh/generate?wait=30", {"images": [file_id], "model_preference": "builtin_silhouette"})
    assert job["status"] == "succeeded", job
    model = next(o for o in job["outputs"] if o["name"] == "model.glb")  # beside it, the cut-out it was made from
    data = client.get(model["url"].removeprefix("/api/v1")).content
    report = assert_valid_gltf(data, tmp_path)
    assert report["numErrors"] == 0
    scene = trimesh.load(io.BytesIO(data), file_type="glb", force="scene")
    (mesh,) = scene.geometry.values()
    assert len(mesh.faces) > 5000 and mesh.is_watertight and mesh.volume > 0
    assert mesh.visual.kind == "texture" and mesh.visual.material.baseColorTexture is not None, "textured"
    # the silhouette: the mesh is as wide, relative to its height, as the object in the picture
    alpha = np.asarray(Image.open(IMAGES / image))[:, :, 3] > 127
    ys, xs = np.nonzero(alpha)
    extent = mesh.bounds[1] - mesh.bounds[0]
    assert extent[0] / extent[1] == pytest.approx(np.ptp(xs) / np.ptp(ys), rel=0.1)


def test_grabcut_finds_the_object_without_alpha() -> None:
    rgba = np.asarray(Image.open(IMAGES / "typical_misc_crate.png").convert("RGBA"))
    truth = rgba[:, :, 3] > 127
    flat = Image.new("RGB", (rgba.shape[1], rgba.shape[0]), (255, 255, 255))
    flat.paste(Image.fromarray(rgba), mask=Image.fromarray(rgba[:, :, 3]))
    opaque = np.dstack([np.asarray(flat), np.full(truth.shape, 255, np.uint8)])
    found = foreground_mask(opaque)
    iou = (found & truth).sum() / (found | truth).sum()
    assert iou > 0.9, iou


def test_an_empty_image_is_refused_as_input() -> None:
    blank = np.dstack([np.full((64, 64, 3), 255, np.uint8), np.zeros((64, 64), np.uint8)])
    with pytest.raises(InputRejected):
        foreground_mask(blank)
