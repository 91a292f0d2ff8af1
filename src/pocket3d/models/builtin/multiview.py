"""Built-in multi-image → mesh: a visual hull. A classical baseline, not a learned model.

1. Each view's foreground (alpha, else GrabCut), cropped to its bounding box. The views carry no scale, so each
   is scaled to the same height: seen from around the vertical axis, an object is equally tall in every view.
2. A voxel grid around the vertical axis; a voxel is kept when it falls inside the silhouette in every view
   (orthographic cameras at the given azimuths: front/side/back by default). The largest piece is kept.
3. The occupancy, lightly smoothed, is meshed by marching cubes: closed and watertight.
4. UVs from xatlas; the texture is baked from the views by projection, only where a view sees the surface,
   blended by facing angle (see ``texturing``).

What it cannot do: concavities that no silhouette shows (the inside of a cup, the space between an arm and the
body when every view overlaps them) stay filled; views that do not match their azimuths (or a subject that
moved between shots) carve away too much. Each view's horizontal centre is taken to be the vertical axis.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import trimesh
from pydantic import BaseModel, ConfigDict, Field
from scipy import ndimage
from skimage.measure import marching_cubes

from pocket3d.errors import WarningCode
from pocket3d.geometry.decimate import decimate_mesh
from pocket3d.models.builtin import MESH_OUTPUTS, builtin_spec
from pocket3d.models.builtin.image_to_mesh import cut_out, read_image
from pocket3d.models.builtin.texturing import AZIMUTHS_HELP, MAX_VIEWS, View, bake_views, unwrap, view_azimuths
from pocket3d.models.spec import Feature, InputRejected, ModelAdapter, ProgressFn, RunInputs, warn

GRID = {"low": 64, "medium": 112, "high": 160}  # voxels along the object's height, by quality
MAX_VOXELS = 8_000_000  # about 8 MB of occupancy and 40 MB for the smoothed field, whatever the object's shape
FACES = {"low": 8_000, "medium": 20_000, "high": 30_000}  # the hull is decimated to this before UV unwrapping


class MultiViewParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    azimuths: list[float] | None = Field(
        None, min_length=2, max_length=MAX_VIEWS,
        description=AZIMUTHS_HELP)
    grid: int | None = Field(None, ge=32, le=256, description="voxels along the height; default from quality")


class VisualHullModel(ModelAdapter):
    """Built-in CPU multi-image → mesh (visual hull, texture projected from the views); no weights."""

    Params = MultiViewParams
    default_spec = builtin_spec(
        "builtin_visual_hull", Feature.MESH_GENERATION, {"multiview"}, MESH_OUTPUTS,
        "Built-in CPU baseline: the visual hull of 2-4 views, textured by projecting the views", cutout=True)

    @classmethod
    def check_request(cls, *, images: int, text: str | None, params: MultiViewParams) -> None:
        if not 2 <= images <= MAX_VIEWS:
            raise InputRejected(f"the visual hull needs 2 to {MAX_VIEWS} views, got {images}")
        if params.azimuths is not None and len(params.azimuths) != images:
            raise InputRejected(f"{len(params.azimuths)} azimuths for {images} images: give one per image")

    def run(self, inputs: RunInputs, params: MultiViewParams, progress: ProgressFn) -> dict[str, Path]:
        self.check_request(images=len(inputs.images), text=inputs.text, params=params)
        azimuths = view_azimuths(inputs, params.azimuths)
        names = inputs.view_names or [f"image {i + 1}" for i in range(len(inputs.images))]
        progress(0.05, "finding the foreground in each view")
        views = []
        for path, azimuth, name in zip(inputs.images, azimuths, names, strict=True):
            # bake_views reads the object from alpha
            views.append(View(image=cut_out(read_image(path, f"view {name}")), azimuth=azimuth))
        grid = params.grid or GRID.get(inputs.quality, 112)
        progress(0.2, f"carving the visual hull ({len(views)} views, {grid} voxels tall)")
        mesh, left_out = consistent_hull(views, grid)
        for i in left_out:
            warn(progress, WarningCode.VIEW_LEFT_OUT,
                 f"the {names[i]} view (azimuth {azimuths[i]:g}) was left out: its silhouette disagrees with the "
                 "other views at the azimuths given, and carving with it cut the object in two")
        views = [v for i, v in enumerate(views) if i not in left_out]
        progress(0.45, f"simplifying the hull to {FACES.get(inputs.quality, 20_000)} faces")
        mesh = decimate_mesh(mesh, FACES.get(inputs.quality, 20_000))
        progress(0.5, "unwrapping UVs")
        mesh = unwrap(mesh)
        progress(0.7, "baking the texture from the views")
        texture = bake_views(mesh, views, inputs.texture_resolution)
        mesh.visual = trimesh.visual.TextureVisuals(
            uv=mesh.visual.uv,
            material=trimesh.visual.material.PBRMaterial(baseColorTexture=texture, metallicFactor=0.0,
                                                         roughnessFactor=0.9, doubleSided=False))
        progress(0.95, "writing the mesh")
        out = inputs.work_dir / "mesh.glb"
        mesh.export(out)
        return {"mesh": out}


@dataclass(frozen=True)
class _Silhouette:
    mask: np.ndarray  # cropped to the object's rows; columns padded so the centroid is the middle column
    half_width: float  # in units of the object's height


def _silhouette(view: View, tolerance: float) -> _Silhouette:
    """The view's mask, one object-height tall, centred on the silhouette's centroid. The centroid, not the
    bounding box: a raised arm or a tuft of hair moves the box's middle in one view and not in another, while the
    centroids of the views' silhouettes stay close to the same vertical axis. Grown by ``tolerance`` (a share of
    the height), so views that do not agree to the pixel still overlap."""
    mask = view.image[:, :, 3] > 127
    ys, xs = np.nonzero(mask)
    if len(ys) < 16:
        raise InputRejected("no object found in one of the views")
    crop = mask[ys.min():ys.max() + 1]
    height = crop.shape[0]
    grow = max(1, round(tolerance * height))
    crop = cv2.dilate(crop.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * grow + 1,) * 2)) > 0
    centre = xs.mean()
    reach = int(np.ceil(max(centre - xs.min(), xs.max() - centre))) + grow + 1
    left = int(round(centre)) - reach
    padded = np.zeros((height, 2 * reach + 1), bool)
    lo, hi = max(0, left), min(crop.shape[1], left + padded.shape[1])
    padded[:, lo - left:hi - left] = crop[:, lo:hi]
    return _Silhouette(padded, padded.shape[1] / 2 / height)


def consistent_hull(views: list[View], grid: int, tolerance: float = 0.01) -> tuple[trimesh.Trimesh, list[int]]:
    """The visual hull of the views, and the indices of views left out because they disagree with the others.

    Every silhouette spans the object's full height, so a hull much shorter than that means the views do not
    agree (a wrong azimuth, a subject that moved): the carving cut the object in two and only a piece is left.
    Then the hull is carved again without each view in turn, and the tallest result wins."""
    hull = visual_hull(views, grid, tolerance)
    if _height_share(hull) >= MIN_HEIGHT_SHARE or len(views) <= 2:
        return hull, []
    best, left_out = hull, []
    for i in range(len(views)):
        candidate = visual_hull(views[:i] + views[i + 1:], grid, tolerance)
        if _height_share(candidate) > _height_share(best) + 0.02:
            best, left_out = candidate, [i]
    return best, left_out


MIN_HEIGHT_SHARE = 0.9


def _height_share(mesh: trimesh.Trimesh) -> float:
    return float(mesh.bounds[1, 1] - mesh.bounds[0, 1])  # the views make the object one unit tall


def visual_hull(views: list[View], grid: int, tolerance: float = 0.01) -> trimesh.Trimesh:
    """The hull of the views' silhouettes as a closed mesh, standing on y = 0, one unit tall, centred on the
    vertical axis. Only the largest piece is kept."""
    silhouettes = [_silhouette(v, tolerance) for v in views]
    half_width = max(s.half_width for s in silhouettes)  # no view sees the object wider than this
    # A long, flat object (a sword lying down) is many heights wide: keep the grid within MAX_VOXELS by coarsening
    # the step rather than letting the memory grow with the square of the width.
    step = max(1.0 / grid, (4 * half_width * half_width / MAX_VOXELS) ** (1 / 3))
    xs = np.arange(-half_width + step / 2, half_width, step, dtype=np.float32)
    ys = np.arange(step / 2, 1.0, step, dtype=np.float32)
    x, z = np.meshgrid(xs, xs, indexing="ij")  # the ground plane; a view's column depends on it alone
    inside = np.ones((len(xs), len(ys), len(xs)), bool)
    for view, silhouette in zip(views, silhouettes, strict=True):
        a = np.radians(view.azimuth)
        across = x * np.cos(a) - z * np.sin(a)  # along the image's right, in units of the object's height
        crop = silhouette.mask
        h, w = crop.shape
        col = np.floor((across / silhouette.half_width + 1) / 2 * w).astype(np.int64)
        row = np.floor((1.0 - ys) * h).astype(np.int64)  # and its row on the height alone
        in_col, in_row = (col >= 0) & (col < w), (row >= 0) & (row < h)
        for j in np.flatnonzero(in_row):  # slab by slab: no index array as large as the grid
            seen = np.zeros(col.shape, bool)
            seen[in_col] = crop[row[j], col[in_col]]
            inside[:, j, :] &= seen
        inside[:, ~in_row, :] = False
    labels, count = ndimage.label(inside)
    if count == 0:
        raise InputRejected("the views' silhouettes do not overlap: check the azimuths and the order of the images")
    sizes = ndimage.sum_labels(inside, labels, index=np.arange(1, count + 1))
    inside = labels == 1 + int(np.argmax(sizes))
    if inside.sum() < 8:
        raise InputRejected("the visual hull is too thin to mesh: check the azimuths and the order of the images")
    field = ndimage.gaussian_filter(np.pad(inside, 2).astype(np.float32), 0.8)
    verts, faces, _, _ = marching_cubes(field, 0.5, spacing=(step, step, step))
    verts -= 2 * step  # the padding
    verts += (xs[0], ys[0], xs[0])
    mesh = trimesh.Trimesh(verts, faces[:, ::-1], process=True)  # marching_cubes winds inward here
    if mesh.volume < 0:
        mesh.invert()
    return mesh


def render_silhouette(mesh: trimesh.Trimesh, azimuth: float, size: int = 256) -> np.ndarray:
    """An RGBA image of the mesh's silhouette seen from ``azimuth`` (orthographic): for tests and tools that
    make views of a known shape."""
    a = np.radians(azimuth)
    across = mesh.vertices[:, 0] * np.cos(a) - mesh.vertices[:, 2] * np.sin(a)
    points = np.column_stack([across, -mesh.vertices[:, 1]])
    points = (points - points.min(axis=0)) / np.ptp(points[:, 1]) * (size - 8) + 4
    canvas = np.zeros((size, int(np.ceil(points[:, 0].max())) + 5), np.uint8)
    for triangle in np.round(points[mesh.faces]).astype(np.int32):  # one by one: fillPoly would XOR overlaps
        cv2.fillConvexPoly(canvas, triangle, 255)
    rgba = np.zeros(canvas.shape + (4,), np.uint8)
    rgba[..., :3] = 200
    rgba[..., 3] = canvas
    return rgba
