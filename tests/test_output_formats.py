"""What each output format keeps of a result (pocket3d.formats), checked against the real writers through the
export stage, and so the formats each feature offers."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import get_args

import numpy as np
import pygltflib
import pytest
import trimesh
from client_helpers import read_fbx
from PIL import Image

from pocket3d import formats, geometry
from pocket3d.api import schemas
from pocket3d.models.spec import RunInputs
from pocket3d.scheduler import stage_io


def test_each_feature_offers_the_formats_that_keep_what_it_makes() -> None:
    every = ("glb", "obj", "ply", "stl", "json", "fbx", "usdz")
    assert formats.formats_for("mesh_generation") == formats.formats_for("texture_generation") == every
    assert formats.formats_for("segmentation") == ("glb", "obj", "fbx", "usdz")
    assert formats.formats_for("auto_rigging") == ("glb", "fbx")
    for request, feature in ((schemas.MeshGenerationRequest, "mesh_generation"),
                             (schemas.TextureGenerationRequest, "texture_generation"),
                             (schemas.SegmentationRequest, "segmentation"), (schemas.RiggingRequest, "auto_rigging")):
        props = request.model_json_schema()["properties"]
        assert tuple(props["output_format"]["enum"]) == formats.formats_for(feature), request
        assert tuple(props["output_formats"]["anyOf"][0]["items"]["enum"]) == formats.formats_for(feature)
    assert set(get_args(schemas.OutputFormat)) == set(formats.KEEPS) == {
        name for name, f in geometry.FORMATS.items() if f.exporter is not None}, "every writer says what it keeps"


@pytest.fixture(scope="module")
def segmented(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A textured result in two parts, as segmentation writes it."""
    box, ball = trimesh.creation.box(), trimesh.creation.icosphere()
    ball.apply_translation([3.0, 0.0, 0.0])
    mesh = trimesh.util.concatenate([box, ball])
    uv = np.random.default_rng(0).random((len(mesh.vertices), 2))
    mesh.visual = trimesh.visual.TextureVisuals(uv=uv, image=Image.new("RGB", (16, 16), (200, 30, 30)))
    dest = tmp_path_factory.mktemp("segmented") / "segmented.glb"
    geometry.write_segmented_glb(mesh, np.array([0] * len(box.faces) + [1] * len(ball.faces)), dest)
    return dest


def _parts_and_texture(fmt: str, path: Path, tmp_path: Path) -> tuple[int, bool]:
    """How many separate parts the file holds, and whether it carries a texture image, as its reader sees it."""
    if fmt == "glb":
        gltf = pygltflib.GLTF2.load(str(path))
        return sum(1 for n in gltf.nodes if n.mesh is not None), bool(gltf.images)
    if fmt == "obj":
        with zipfile.ZipFile(path) as z:
            objects = [ln for ln in z.read("model.obj").decode().splitlines() if ln.startswith("o ")]
            return len(objects), any(n.endswith(".png") for n in z.namelist())
    if fmt == "fbx":
        found = read_fbx(path)
        return len(found["meshes"]), any(m["images"] for m in found["meshes"])
    if fmt == "usdz":
        from pxr import Usd, UsdGeom

        stage = Usd.Stage.Open(str(path))
        meshes = [p for p in stage.Traverse() if p.IsA(UsdGeom.Mesh)]
        with zipfile.ZipFile(path) as z:
            return len(meshes), any(n.endswith(".png") for n in z.namelist())
    if fmt == "json":
        return 1, False  # one vertex list, one face list: nowhere to keep a part or an image
    return len(trimesh.load(str(path), file_type=fmt, force="scene").geometry), False


@pytest.mark.parametrize("fmt", list(formats.KEEPS))
def test_parts_and_texture_survive_where_the_format_claims_they_do(fmt: str, segmented: Path, tmp_path: Path) -> None:
    files = stage_io.export(RunInputs(work_dir=tmp_path, mesh=segmented), {"formats": [fmt]}, tmp_path,
                            geometry.MeshLimits())
    (written,) = [p for name, p in files.items() if name.startswith("model.")]
    if fmt == "json":
        body = json.loads(written.read_text())
        assert len(body["faces"]) == len(trimesh.creation.box().faces) + len(trimesh.creation.icosphere().faces)
    parts, textured = _parts_and_texture(fmt, written, tmp_path)
    assert parts == (2 if formats.PARTS in formats.KEEPS[fmt] else 1), (fmt, parts)
    assert textured == (formats.TEXTURE in formats.KEEPS[fmt]), (fmt, textured)
