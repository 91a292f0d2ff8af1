"""Built-in texture for a given mesh: a UV atlas, then colours baked into it by camera projection from reference
images, or from the colour and material words of a prompt. A classical baseline, not a learned model.

1. UVs. A mesh that already has a usable UV atlas (one UV set inside [0, 1], charts that do not overlap, no
   surface left without UV area) keeps it and its exact geometry, whatever its size. Any other mesh is welded by
   position, decimated when above ``max_faces`` (xatlas's time grows fast: ~8 s at 47k faces, ~34 s at 116k)
   and unwrapped by xatlas, its vertices split along the new seams.
2. The atlas is rasterised: every texel whose centre lies in a UV triangle gets that triangle's surface point
   and its smooth normal (normals of the mesh welded by position, so seams do not show in the blend weights).
   Textures above 2048 are baked at 2048 and scaled up: no reference image here holds more detail.
3. Images. Each image is an orthographic view from a known azimuth (and elevation) around the up axis; one
   without transparency is cut out first (GrabCut, as the silhouette model does). The views carry no scale, so
   the object's bounding box in the image is fitted onto the mesh's projected bounding box, each axis on its own.
   A texel takes a view's colour when it faces that camera, a ray from it towards the camera escapes the mesh
   (Embree), and it lands on the object in the image; views are blended with weights cos^p of the angle between
   the normal and the view direction. Texels no view sees take a blend of the nearest seen colours in 3D (or the
   prompt's colour when a prompt names one).
4. Text. The first colour named is the base; further colours go to further connected parts (by area), or, for a
   mesh in one piece, to height bands from the top down. A material word sets glTF metallic and roughness and
   adds a faint solid pattern computed from 3D position (wood rings, bricks, stone speckle, marble veins,
   weave), so it runs on across UV seams.
5. Texels outside every chart take the nearest chart's colour, so bilinear filtering and mipmaps never mix in
   a background colour.

Where it fails: images must show the object from the given directions, roughly orthographically; a perspective
photo, another pose or other proportions put colours in the wrong places (the bounding-box fit is the only
alignment). What no view sees is a guess, smeared from the nearest seen surface (one front view leaves the back
a blur of the rim's colours). Lighting and shadows in the images are baked into the texture. The text path
knows colours and materials, not parts: "gold legs" colours the lowest band or the smaller pieces gold, whether
or not those are legs. The mesh is Y-up, +Z forward: pocket3d turned it so before this model runs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import cv2
import numpy as np
import PIL.Image
import trimesh
from pydantic import BaseModel, ConfigDict, Field
from scipy.spatial import cKDTree

from pocket3d.geometry.decimate import decimate_mesh
from pocket3d.geometry.meshes import one_mesh, weld
from pocket3d.geometry.validate import load_scene
from pocket3d.models.builtin import uv_atlas
from pocket3d.models.builtin.guards import require_finite
from pocket3d.models.builtin.image_to_mesh import cut_out, read_image
from pocket3d.models.builtin.words import Appearance, parse_appearance
from pocket3d.models.builtin import MESH_OUTPUTS, builtin_spec
from pocket3d.models.spec import VIEW_AZIMUTHS, Feature, InputRejected, ModelAdapter, ProgressFn, RunInputs

RGB = tuple[float, float, float]
NEUTRAL_GREY: RGB = (0.7, 0.7, 0.7)
MAX_VIEWS = 4
FACING_POWER = 4.0  # p in the cos^p blend: a view seen head-on outweighs one seen at an angle
MIN_FACING = 0.05  # cos of the steepest angle a view still colours (about 87 degrees)
MAX_IMAGE_SIDE = 2048  # larger reference images are shrunk: the atlas cannot hold more detail than this
BAKE_LIMIT = 2048  # larger textures are baked at this size and scaled up: no source holds more detail
RAY_CHUNK = 1_000_000  # rays per Embree call, to bound memory at large textures
RASTER_CHUNK = 1_000_000  # candidate texels per rasteriser step, to bound memory
FILL_CELLS = 200  # grid cells along the longest side in which texels are pooled for the unseen fill
FILL_NEIGHBOURS = 8  # seen cells blended into each unseen one
PART_SHARE = 0.05  # of the surface: a second connected part this large takes the second colour named


# -- views ------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class View:
    """One reference image and where its camera stood. Orthographic camera on a circle around the up axis (+Y):
    at azimuth a (degrees) the camera sits in direction (sin a, 0, cos a) from the object's centre and looks at it;
    image right = (cos a, 0, -sin a), image up = +Y (elevation tilts it up/down, default 0).
    So 0 = front (camera on +Z), 90 = from +X (the left side of an object facing the front camera), 180 = back,
    270 = from -X."""

    image: np.ndarray  # RGBA uint8 (H, W, 4); alpha > 127 marks the object
    azimuth: float = 0.0
    elevation: float = 0.0


AZIMUTHS_HELP = ("the camera's azimuth in degrees for each image, in order, around the vertical axis: 0 the front "
                 "(camera on +Z), 90 from +X (the left side of an object that faces the front camera), 180 the "
                 "back, 270 from -X; default: from the request's named views, else 0, 90, 180, 270 for the first "
                 "images")


def view_azimuths(inputs: RunInputs, given: list[float] | None) -> list[float]:
    """Each image's azimuth: as given (parameters.azimuths), else from the request's named views, else front,
    +X side, back, -X side in order."""
    if given is not None:
        return list(given)
    if inputs.view_names is not None:
        return [VIEW_AZIMUTHS[name] for name in inputs.view_names]
    return default_azimuths(len(inputs.images))


def default_azimuths(count: int) -> list[float]:
    """Front, +X side, back, -X side: the first ``count`` of them (1 to 4)."""
    if not 1 <= count <= MAX_VIEWS:
        raise ValueError(f"between 1 and {MAX_VIEWS} views have default azimuths, not {count}")
    return [0.0, 90.0, 180.0, 270.0][:count]


def camera_axes(azimuth: float, elevation: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(image right, image up, towards the camera) as unit vectors in the object's Y-up frame."""
    a, e = np.radians(azimuth), np.radians(elevation)
    towards = np.array([np.sin(a) * np.cos(e), np.sin(e), np.cos(a) * np.cos(e)])
    right = np.array([np.cos(a), 0.0, -np.sin(a)])
    return right, np.cross(towards, right), towards


# -- UV atlas ---------------------------------------------------------------------------------------------------

def unwrap(mesh: trimesh.Trimesh, max_faces: int = 30_000, *, texture_size: int = 1024,
           timeout: float | None = None, progress: ProgressFn | None = None) -> trimesh.Trimesh:
    """The mesh with a UV atlas from xatlas (vertices split at seams), decimated first when above max_faces.
    A mesh that already has a usable UV set keeps it (and its exact geometry). xatlas gets ``timeout`` seconds
    (default: 30 plus 1 ms a face), then a plain per-face atlas is made instead."""
    if has_usable_uvs(mesh):
        return _with_uv(mesh.vertices, mesh.faces, np.asarray(mesh.visual.uv, dtype=np.float64))
    joined = weld(mesh.vertices, mesh.faces)
    vertices, faces = joined.vertices, joined.faces
    if len(faces) > max_faces:
        plain = decimate_mesh(trimesh.Trimesh(vertices, faces, process=False), max_faces)
        vertices, faces = np.asarray(plain.vertices), np.asarray(plain.faces)
    resolution = min(texture_size, BAKE_LIMIT)
    padding = max(2, resolution // 256)  # texels between charts, so neighbours do not bleed
    seconds = timeout if timeout is not None else 30.0 + len(faces) / 1000
    made = uv_atlas.atlas(vertices, faces, resolution, padding, seconds)
    if made is None:
        if progress is not None:
            progress(0.25, f"xatlas did not finish in {seconds:g} s (degenerate faces?): one atlas cell a face instead")
        made = uv_atlas.grid(faces, padding * np.sqrt(len(faces) / 2) / resolution)
    source, new_faces, uv = made
    require_finite("the UV atlas", uv)
    return _with_uv(vertices[source], new_faces, uv)


def has_usable_uvs(mesh: trimesh.Trimesh) -> bool:
    """One UV per vertex, inside [0, 1], covering every face that has area, charts overlapping at most a
    little (mirrored or stacked charts would get one bake for two surfaces)."""
    uv = getattr(mesh.visual, "uv", None) if mesh.visual.kind == "texture" else None
    if uv is None or len(uv) != len(mesh.vertices) or len(mesh.faces) == 0:
        return False
    uv = np.asarray(uv, dtype=np.float64)
    if not np.isfinite(uv).all() or uv.min() < -1e-3 or uv.max() > 1 + 1e-3:
        return False
    a, b, c = (uv[mesh.faces[:, i]] for i in range(3))
    uv_area = 0.5 * np.abs((b - a)[:, 0] * (c - a)[:, 1] - (b - a)[:, 1] * (c - a)[:, 0])
    surface = mesh.area_faces
    if surface[uv_area < 1e-12].sum() > 0.01 * surface.sum():
        return False
    texels = _rasterise(uv, mesh.faces, 256)
    if len(texels.index) == 0:
        return False
    overlap = 1 - len(_one_per_texel(texels, 256).index) / len(texels.index)
    return overlap < 0.05


def _with_uv(vertices: np.ndarray, faces: np.ndarray, uv: np.ndarray) -> trimesh.Trimesh:
    return trimesh.Trimesh(vertices, faces, visual=trimesh.visual.TextureVisuals(uv=uv), process=False)


# -- atlas rasterisation ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Texels:
    index: np.ndarray  # row * size + col of each covered texel
    face: np.ndarray  # the face it lies in
    bary: np.ndarray  # (n, 3) its barycentric coordinates in that face


@dataclass(frozen=True)
class _Surface:
    """The covered texels of an atlas and the surface points they stand for."""

    size: int
    index: np.ndarray
    points: np.ndarray  # (n, 3)
    normals: np.ndarray  # (n, 3) unit, smooth
    face: np.ndarray


def _rasterise(uv: np.ndarray, faces: np.ndarray, size: int) -> _Texels:
    """The texels whose centres lie in each UV triangle, per triangle (row 0 is the top of the image: v = 1).

    Row by row: on each row a triangle covers one span, so the work grows with the texels covered plus the rows
    crossed, never with a triangle's bounding box (a fan of 5000 slivers across one chart has boxes a
    thousand times larger than the slivers)."""
    x = (uv[:, 0] * size - 0.5)[faces]  # texel centres sit at integer coordinates
    y = ((1 - uv[:, 1]) * size - 0.5)[faces]
    x0 = np.clip(np.ceil(x.min(axis=1)), 0, size - 1).astype(np.int64)
    x1 = np.clip(np.floor(x.max(axis=1)), 0, size - 1).astype(np.int64)
    y0 = np.clip(np.ceil(y.min(axis=1)), 0, size - 1).astype(np.int64)
    y1 = np.clip(np.floor(y.max(axis=1)), 0, size - 1).astype(np.int64)
    width, height = x1 - x0 + 1, y1 - y0 + 1
    denom = (y[:, 1] - y[:, 2]) * (x[:, 0] - x[:, 2]) + (x[:, 2] - x[:, 1]) * (y[:, 0] - y[:, 2])
    # A bounding box clipped into the image from outside has width <= 0; a flat UV triangle covers nothing.
    rows_of = np.where((width > 0) & (height > 0) & (np.abs(denom) > 1e-12), height, 0)
    indices, face_ids, barys = [], [], []
    for lo, hi in _chunks(rows_of):
        ids = np.repeat(np.arange(lo, hi), rows_of[lo:hi])
        row = y0[ids] + _ranks(rows_of[lo:hi])
        left, right = _span(x[ids], y[ids], row)
        # a row that crosses no edge (a corner grazed within float error) covers nothing: an empty span
        missed = ~(np.isfinite(left) & np.isfinite(right))
        left, right = np.where(missed, x1[ids] + 1.0, left), np.where(missed, x0[ids] - 1.0, right)
        left = np.maximum(np.ceil(left - 1e-3), x0[ids]).astype(np.int64)
        right = np.minimum(np.floor(right + 1e-3), x1[ids]).astype(np.int64)
        cols_of = np.maximum(right - left + 1, 0)
        for a, b in _chunks(cols_of):
            pick = np.repeat(np.arange(a, b), cols_of[a:b])
            tri, r = ids[pick], row[pick]
            col = left[pick] + _ranks(cols_of[a:b])
            xs, ys = x[tri], y[tri]
            dx, dy = col - xs[:, 2], r - ys[:, 2]
            b0 = ((ys[:, 1] - ys[:, 2]) * dx + (xs[:, 2] - xs[:, 1]) * dy) / denom[tri]
            b1 = ((ys[:, 2] - ys[:, 0]) * dx + (xs[:, 0] - xs[:, 2]) * dy) / denom[tri]
            b2 = 1 - b0 - b1
            inside = (b0 >= -1e-6) & (b1 >= -1e-6) & (b2 >= -1e-6)
            indices.append((r * size + col)[inside])
            face_ids.append(tri[inside])
            barys.append(np.column_stack([b0, b1, b2])[inside])
    if not indices:
        return _Texels(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, 3)))
    return _Texels(np.concatenate(indices), np.concatenate(face_ids), np.concatenate(barys))


def _chunks(counts: np.ndarray) -> list[tuple[int, int]]:
    """Ranges of items whose counts sum to about RASTER_CHUNK each, to bound memory."""
    ends = np.cumsum(counts)
    if not len(ends) or ends[-1] == 0:
        return []
    steps = np.searchsorted(ends, np.arange(RASTER_CHUNK, ends[-1], RASTER_CHUNK))
    return [(int(lo), int(hi)) for lo, hi in zip(np.r_[0, steps], np.r_[steps, len(counts)], strict=True)
            if hi > lo]


def _ranks(counts: np.ndarray) -> np.ndarray:
    """0, 1, …, n-1 for each item repeated n times: the position of each repetition within its item."""
    total = int(counts.sum())
    starts = np.repeat(np.cumsum(counts) - counts, counts)
    return np.arange(total) - starts


def _span(x: np.ndarray, y: np.ndarray, row: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Where the horizontal line at ``row`` crosses each triangle ((n, 3) corners): the leftmost and rightmost
    crossing of its three edges."""
    left = np.full(len(row), np.inf)
    right = np.full(len(row), -np.inf)
    with np.errstate(divide="ignore", invalid="ignore"):
        for i, j in ((0, 1), (1, 2), (2, 0)):
            xa, ya, xb, yb = x[:, i], y[:, i], x[:, j], y[:, j]
            crosses = (np.minimum(ya, yb) <= row) & (row <= np.maximum(ya, yb))
            flat = ya == yb
            at = np.where(flat, xa, xa + (row - ya) * (xb - xa) / np.where(flat, 1.0, yb - ya))
            left = np.where(crosses, np.minimum(left, np.minimum(at, np.where(flat, xb, at))), left)
            right = np.where(crosses, np.maximum(right, np.maximum(at, np.where(flat, xb, at))), right)
    return left, right


def _one_per_texel(texels: _Texels, size: int) -> _Texels:
    """One entry for each texel covered (a texel centre on an edge between faces is found twice; where charts
    overlap, the last face wins), in texel order."""
    owner = np.full(size * size, -1, np.int64)
    owner[texels.index] = np.arange(len(texels.index))
    keep = owner[owner >= 0]
    return _Texels(texels.index[keep], texels.face[keep], texels.bary[keep])


def _surface(mesh: trimesh.Trimesh, size: int) -> _Surface:
    uv = getattr(mesh.visual, "uv", None)
    if uv is None or len(uv) != len(mesh.vertices):
        raise ValueError("baking needs a mesh with one UV per vertex: unwrap it first")
    uv = np.asarray(uv, dtype=np.float64)
    texels = _one_per_texel(_rasterise(uv, np.asarray(mesh.faces), size), size)
    corners = mesh.faces[texels.face]
    points = np.einsum("ij,ijk->ik", texels.bary, mesh.vertices[corners])
    normals = np.einsum("ij,ijk->ik", texels.bary, _smooth_normals(mesh)[corners])
    length = np.linalg.norm(normals, axis=1, keepdims=True)
    normals = np.where(length > 1e-12, normals / np.maximum(length, 1e-12), mesh.face_normals[texels.face])
    return _Surface(size, texels.index, points, normals, texels.face)


def _smooth_normals(mesh: trimesh.Trimesh) -> np.ndarray:
    """Vertex normals of the mesh welded by position, one per vertex of ``mesh`` (the same on both sides of a
    UV seam)."""
    joined = weld(mesh.vertices, mesh.faces)
    return np.asarray(joined.mesh().vertex_normals)[joined.inverse]


# -- baking from views ------------------------------------------------------------------------------------------

def bake_views(mesh: trimesh.Trimesh, views: Sequence[View], size: int,
               fallback: tuple[float, float, float] = NEUTRAL_GREY, *,
               unseen: Literal["nearest", "fallback"] = "nearest",
               facing_power: float = FACING_POWER,
               progress: Callable[[float, str], None] | None = None) -> PIL.Image.Image:
    """A size x size RGB texture for the mesh's UVs, from the views.

    The mesh is in the views' frame (+Y up) and has one UV per vertex (see ``unwrap``). Each view's image is
    fitted onto the mesh's projected bounding box in that view (the object's alpha bounding box <-> the mesh's
    projected bounds, each axis on its own: the views carry no scale). A texel takes a view's colour where its
    surface point faces that camera, a ray from it towards the camera escapes the mesh, and it lands on the
    object in the image; views are blended by cos^p of the angle between the smooth normal and the view
    direction (p = ``facing_power``). Texels no view sees get the colour of the nearest seen surface in 3D (a
    blend of the nearest few), or ``fallback`` (RGB in 0..1) when no view sees anything or with
    ``unseen="fallback"``. Texels outside the charts take the nearest chart's colour, so mipmaps don't bleed.
    Sizes above BAKE_LIMIT are baked at BAKE_LIMIT and scaled up. ``progress`` gets (fraction, message)."""
    report = progress or (lambda fraction, message: None)
    report(0.0, "rasterising the UV atlas")
    surface = _surface(mesh, min(size, BAKE_LIMIT))
    total = np.zeros((len(surface.index), 3), np.float32)
    weight = np.zeros(len(surface.index), np.float32)
    for i, view in enumerate(views):
        report(0.1 + 0.7 * i / max(len(views), 1), f"projecting view {i + 1} of {len(views)}")
        colour, w = _project_view(mesh, surface, view, facing_power)
        total += colour * w[:, None]
        weight += w
    report(0.85, "filling what no view sees")
    seen = weight > 0
    colours = np.empty_like(total)
    colours[seen] = total[seen] / weight[seen, None]
    if not seen.any() or unseen == "fallback":
        colours[~seen] = np.asarray(fallback, np.float32) * 255
    else:
        colours[~seen] = _nearest_in_space(surface.points[seen], colours[seen], surface.points[~seen])
    report(0.95, "padding the charts")
    return _texture_image(surface, colours, size)


def _project_view(mesh: trimesh.Trimesh, surface: _Surface, view: View,
                  facing_power: float) -> tuple[np.ndarray, np.ndarray]:
    """Each texel's colour in this view (0..255) and its blend weight (0 where the view does not see it)."""
    colour = np.zeros((len(surface.index), 3), np.float32)
    weight = np.zeros(len(surface.index), np.float32)
    rgba = _shrunk(np.asarray(view.image))
    mask = rgba[:, :, 3] > 127
    if not mask.any():
        return colour, weight
    right, up, towards = camera_axes(view.azimuth, view.elevation)
    facing = surface.normals @ towards
    x, y = _image_coordinates(surface.points, right, up, np.asarray(mesh.vertices), mask)
    rows, cols = np.nonzero(mask)
    reach = max(2, round(0.01 * max(np.ptp(rows), np.ptp(cols))))  # silhouettes never match to the pixel
    on_object = cv2.dilate(mask.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE,
                                                                            (2 * reach + 1,) * 2))
    px = np.clip(np.floor(x).astype(np.int64), 0, mask.shape[1] - 1)
    py = np.clip(np.floor(y).astype(np.int64), 0, mask.shape[0] - 1)
    inside_image = (x >= 0) & (x < mask.shape[1]) & (y >= 0) & (y < mask.shape[0])
    candidate = np.flatnonzero((facing > MIN_FACING) & inside_image & (on_object[py, px] > 0))
    visible = candidate[_escapes(mesh, surface.points[candidate], surface.normals[candidate], towards)]
    # Colours come from inside the outline: edge pixels are part background (a light or dark halo).
    core = cv2.erode(mask.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
    filled = _fill_from_nearest(rgba[:, :, :3].astype(np.float32), core if core.any() else mask)
    colour[visible] = _bilinear(filled, x[visible] - 0.5, y[visible] - 0.5)
    weight[visible] = facing[visible] ** facing_power
    return colour, weight


def _shrunk(rgba: np.ndarray) -> np.ndarray:
    if rgba.ndim != 3 or rgba.shape[2] != 4:
        raise ValueError("a view's image must be RGBA (H, W, 4)")
    longest = max(rgba.shape[:2])
    if longest <= MAX_IMAGE_SIDE:
        return rgba
    scale = MAX_IMAGE_SIDE / longest
    size = (max(1, round(rgba.shape[1] * scale)), max(1, round(rgba.shape[0] * scale)))
    return cv2.resize(rgba, size, interpolation=cv2.INTER_AREA)


def _image_coordinates(points: np.ndarray, right: np.ndarray, up: np.ndarray, bounds_points: np.ndarray,
                       mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Where the points land in the image, in pixels (0 = the left/top edge of the first pixel): the mesh's
    projected bounding box stretched onto the object's bounding box in the image."""
    s_all, t_all = bounds_points @ right, bounds_points @ up
    s_min, s_span = s_all.min(), max(np.ptp(s_all), 1e-12)
    t_max, t_span = t_all.max(), max(np.ptp(t_all), 1e-12)
    rows, cols = np.nonzero(mask)
    c0, width = cols.min(), cols.max() + 1 - cols.min()
    r0, height = rows.min(), rows.max() + 1 - rows.min()
    x = c0 + (points @ right - s_min) / s_span * width
    y = r0 + (t_max - points @ up) / t_span * height
    return x, y


def _escapes(mesh: trimesh.Trimesh, points: np.ndarray, normals: np.ndarray, towards: np.ndarray) -> np.ndarray:
    """True where a ray from the surface point towards the camera hits nothing: the camera sees the point."""
    if len(points) == 0:
        return np.zeros(0, bool)
    # Start a hair off the surface, so the ray does not hit the triangle it starts on.
    offset = 1e-4 * max(float(mesh.scale), 1e-9)
    hits = np.empty(len(points), bool)
    for lo in range(0, len(points), RAY_CHUNK):
        chunk = slice(lo, lo + RAY_CHUNK)
        origins = points[chunk] + (normals[chunk] + towards) * offset
        directions = np.broadcast_to(towards, origins.shape)
        hits[chunk] = mesh.ray.intersects_first(origins, np.ascontiguousarray(directions)) >= 0
    return ~hits


def _fill_from_nearest(image: np.ndarray, known: np.ndarray) -> np.ndarray:
    """The image with every unknown pixel given the colour of the nearest known one."""
    if known.all() or not known.any():
        return image
    _, labels = cv2.distanceTransformWithLabels((~known).astype(np.uint8), cv2.DIST_L2, 5,
                                                labelType=cv2.DIST_LABEL_PIXEL)
    lookup = np.zeros((labels.max() + 1, image.shape[2]), image.dtype)
    lookup[labels[known]] = image[known]
    return lookup[labels]


def _bilinear(image: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Samples at pixel-centre coordinates (0, 0 = the centre of the first pixel), clamped at the borders."""
    h, w = image.shape[:2]
    x, y = np.clip(x, 0, w - 1), np.clip(y, 0, h - 1)
    x0, y0 = np.floor(x).astype(np.int64), np.floor(y).astype(np.int64)
    x1, y1 = np.minimum(x0 + 1, w - 1), np.minimum(y0 + 1, h - 1)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    top = image[y0, x0] * (1 - fx) + image[y0, x1] * fx
    bottom = image[y1, x0] * (1 - fx) + image[y1, x1] * fx
    return (top * (1 - fy) + bottom * fy).astype(np.float32)


def _nearest_in_space(points: np.ndarray, colours: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """For each query point, the colour of the nearest of ``points``. Both sides are pooled into cells of a
    FILL_CELLS^3 grid first (a cell's colour is the mean of its points): far fewer searches, a smoother fill."""
    if len(queries) == 0:
        return np.zeros((0, 3), np.float32)
    low = np.minimum(points.min(axis=0), queries.min(axis=0))
    cell = max(float(np.max(np.maximum(points.max(axis=0), queries.max(axis=0)) - low)), 1e-12) / FILL_CELLS

    def pooled(xyz: np.ndarray) -> tuple[np.ndarray, np.ndarray]:  # (cell of each point, point count per cell)
        ijk = np.minimum(np.floor((xyz - low) / cell).astype(np.int64), FILL_CELLS)
        keys = (ijk[:, 0] * (FILL_CELLS + 1) + ijk[:, 1]) * (FILL_CELLS + 1) + ijk[:, 2]
        _, which = np.unique(keys, return_inverse=True)
        return which.reshape(-1), np.bincount(which.reshape(-1))

    def mean(which: np.ndarray, counts: np.ndarray, values: np.ndarray) -> np.ndarray:
        return np.column_stack([np.bincount(which, values[:, c], len(counts)) for c in range(3)]) / counts[:, None]

    source_of, source_counts = pooled(points)
    query_of, query_counts = pooled(queries)
    cell_colours = mean(source_of, source_counts, colours)
    k = min(FILL_NEIGHBOURS, len(source_counts))
    distance, nearest = cKDTree(mean(source_of, source_counts, points)).query(
        mean(query_of, query_counts, queries), k=k, workers=-1)
    distance, nearest = distance.reshape(-1, k), nearest.reshape(-1, k)
    # The nearest few cells, weighted by closeness: one nearest cell alone leaves a patchwork of its colours.
    weights = 1 / np.maximum(distance, 1e-9 * cell) ** 2
    blended = np.einsum("qk,qkc->qc", weights, cell_colours[nearest]) / weights.sum(axis=1, keepdims=True)
    return blended[query_of].astype(np.float32)


def _texture_image(surface: _Surface, colours: np.ndarray, size: int) -> PIL.Image.Image:
    """The texels' colours (0..255) as an image, every texel outside the charts in the nearest chart's colour,
    scaled up to ``size`` when baked smaller."""
    require_finite("the baked colours", colours)
    baked = surface.size
    image = np.zeros((baked * baked, 3), np.float32)
    known = np.zeros(baked * baked, bool)
    image[surface.index] = colours
    known[surface.index] = True
    image = _fill_from_nearest(image.reshape(baked, baked, 3), known.reshape(baked, baked))
    texture = PIL.Image.fromarray(np.clip(np.rint(image), 0, 255).astype(np.uint8), "RGB")
    return texture if baked == size else texture.resize((size, size), PIL.Image.Resampling.BICUBIC)


# -- baking from words ------------------------------------------------------------------------------------------

def bake_appearance(mesh: trimesh.Trimesh, appearance: Appearance, size: int, seed: int = 0) -> PIL.Image.Image:
    """A size x size RGB texture for the mesh's UVs in the prompt's colours and material pattern. The mesh is
    Y-up (height bands run along Y) and has UVs."""
    surface = _surface(mesh, min(size, BAKE_LIMIT))
    labels = _component_labels(mesh)
    areas = np.bincount(labels, weights=mesh.area_faces)
    second_part = np.sort(areas)[-2] if len(areas) > 1 else 0.0
    # Separate parts take the further colours only when there is a real second part, not a crumb of debris.
    if len(appearance.colours) > 1 and second_part < PART_SHARE * areas.sum():
        base = _band_colours(surface.points, appearance, np.asarray(mesh.vertices))
    else:
        base = _part_colours(labels, areas, appearance)[surface.face]
    centre, scale = mesh.bounds.mean(axis=0), max(float(np.max(mesh.extents)), 1e-9)
    unit_points = (surface.points - centre) / scale  # patterns scale with the object
    colours = _material_pattern(appearance.material, unit_points, surface.normals, base,
                                np.random.default_rng(seed))
    return _texture_image(surface, colours * 255, size)


def _part_colours(labels: np.ndarray, areas: np.ndarray, appearance: Appearance) -> np.ndarray:
    """(faces, 3): the largest connected part in the first colour, the others through the rest in turn."""
    colours = np.asarray(appearance.colours or (appearance.base_colour,), np.float32)
    rank = np.empty(len(areas), np.int64)
    rank[np.argsort(-areas)] = np.arange(len(areas))
    part = rank[labels]
    if len(colours) == 1:
        return colours[np.zeros_like(part)]
    return colours[np.where(part == 0, 0, 1 + (part - 1) % (len(colours) - 1))]


def _band_colours(points: np.ndarray, appearance: Appearance, vertices: np.ndarray) -> np.ndarray:
    """One band of height per colour named, the first at the top."""
    colours = np.asarray(appearance.colours, np.float32)
    top, height = vertices[:, 1].max(), max(np.ptp(vertices[:, 1]), 1e-12)
    band = np.clip(((top - points[:, 1]) / height * len(colours)).astype(np.int64), 0, len(colours) - 1)
    return colours[band]


def _component_labels(mesh: trimesh.Trimesh) -> np.ndarray:
    """Connected part of each face, across UV seams."""
    joined = weld(mesh.vertices, mesh.faces).mesh()
    return trimesh.graph.connected_component_labels(joined.face_adjacency, node_count=len(mesh.faces))


def _noise(points: np.ndarray, frequency: float, rng: np.random.Generator, waves: int = 12) -> np.ndarray:
    """Smooth solid noise of about unit spread: a sum of plane waves in random directions."""
    directions = rng.normal(size=(waves, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    frequencies = frequency * rng.uniform(0.7, 1.4, waves)
    phases = rng.uniform(0, 2 * np.pi, waves)
    return np.sin(2 * np.pi * points @ (directions * frequencies[:, None]).T + phases).sum(axis=1) / np.sqrt(waves / 2)


def _material_pattern(material: str | None, p: np.ndarray, normals: np.ndarray, base: np.ndarray,
                      rng: np.random.Generator) -> np.ndarray:
    """The base colours (0..1) with the material's faint pattern laid over them."""
    if len(p) == 0:
        return base
    if material == "wood":
        radius = np.hypot(p[:, 0], p[:, 2]) + 0.03 * _noise(p, 3, rng)
        rings = (0.5 + 0.5 * np.sin(2 * np.pi * radius * 18)) ** 3
        shade = 0.9 + 0.12 * rings + 0.03 * _noise(p * [1, 0.1, 1], 40, rng)
    elif material == "brick":
        return _bricks(p, normals, base, rng)
    elif material == "marble":
        veins = np.abs(np.sin(2 * np.pi * (p @ [0.6, 0.5, 0.4]) * 3 + 2.5 * _noise(p, 2, rng)))
        shade = 1 - 0.3 * (1 - veins) ** 12
    elif material in ("stone", "concrete", "clay"):
        shade = 1 + 0.06 * _noise(p, 12, rng) + 0.05 * np.tanh(_noise(p, 45, rng))
    elif material == "fabric":
        shade = 1 + 0.04 * np.sin(2 * np.pi * p[:, 0] * 120) * np.sin(2 * np.pi * (p[:, 1] + p[:, 2]) * 120)
    else:  # smooth materials: a hint of unevenness so the surface does not look like flat paint
        shade = 1 + 0.02 * _noise(p, 6, rng)
    return np.clip(base * shade[:, None], 0, 1)


def _bricks(p: np.ndarray, normals: np.ndarray, base: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Running-bond bricks on the plane the surface faces most (X, Y or Z), light mortar between them."""
    facing = np.argmax(np.abs(normals), axis=1)
    across = np.where(facing == 0, p[:, 2], p[:, 0])  # along the wall
    upward = np.where(facing == 1, p[:, 2], p[:, 1])  # up the wall (or across the floor)
    course, length, joint = 1 / 14, 2 / 14, 0.08 / 14
    row = np.floor(upward / course)
    along = across + (row % 2) * length / 2
    brick = np.floor(along / length)
    mortar = (upward - row * course < joint) | (along - brick * length < joint)
    # One shade per brick: a hash of its row and column.
    shade = 0.88 + 0.2 * np.modf(np.sin(row * 12.9898 + brick * 78.233 + rng.uniform(0, 10)) * 43758.5453)[0] ** 2
    colour = np.clip(base * shade[:, None], 0, 1)
    colour[mortar] = [0.75, 0.73, 0.70]
    return colour


# -- the model --------------------------------------------------------------------------------------------------

class TextureParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    azimuths: list[float] | None = Field(
        None, min_length=1, max_length=MAX_VIEWS,
        description=AZIMUTHS_HELP)
    elevations: list[Annotated[float, Field(ge=-90, le=90)]] | None = Field(
        None, min_length=1, max_length=MAX_VIEWS,
        description="the camera's elevation in degrees for each image (positive looks down from above); "
                    "default 0 for all")
    max_faces: int = Field(30_000, ge=1_000, le=100_000,
                           description="a mesh that needs a new UV atlas is decimated to this many faces first "
                                       "(xatlas takes ~8 s at 47k faces); a mesh with usable UVs is never "
                                       "decimated")
    unwrap_timeout: float | None = Field(None, gt=0, le=600,
                                         description="seconds xatlas may take before a plain per-face atlas is "
                                                     "used instead (default 30 plus 1 ms a face): degenerate "
                                                     "faces can keep it from ever finishing")


class ProjectionTextureModel(ModelAdapter):
    """Built-in CPU texturing: xatlas UVs, colours projected from reference images or taken from the prompt."""

    Params = TextureParams
    default_spec = builtin_spec(
        "builtin_projection_paint", Feature.TEXTURE_GENERATION, {"mesh", "text", "image", "multiview"}, MESH_OUTPUTS,
        "Built-in CPU baseline: xatlas UVs, texture baked from 1-4 reference images by projection, or coloured "
        "from the prompt's words", cutout=True)

    @classmethod
    def check_request(cls, *, images: int, text: str | None, params: TextureParams) -> None:
        _check_counts(images, text, params)

    def run(self, inputs: RunInputs, params: TextureParams, progress: ProgressFn) -> dict[str, Path]:
        text = (inputs.text or "").strip()
        _check_inputs(inputs, params, text)
        progress(0.02, "loading the mesh")
        mesh, _ = _load_mesh(inputs.mesh)
        size = inputs.texture_resolution
        progress(0.05, "keeping the mesh's UV atlas" if has_usable_uvs(mesh) else "unwrapping UVs (xatlas)")
        textured = unwrap(mesh, params.max_faces, texture_size=size, timeout=params.unwrap_timeout,
                          progress=progress)
        appearance = parse_appearance(text)
        if inputs.images:
            progress(0.3, "reading the reference images")
            views = _load_views(inputs, params)
            names_a_look = bool(appearance.colours) or appearance.material is not None
            texture = bake_views(textured, views, size,
                                 fallback=appearance.base_colour if names_a_look else NEUTRAL_GREY,
                                 unseen="fallback" if names_a_look else "nearest",
                                 progress=lambda f, message: progress(0.35 + 0.55 * f, message))
        else:
            progress(0.3, f"reading the prompt: {_describe(appearance)}")
            progress(0.35, f"painting {appearance.material or 'plain'} in the colours named")
            texture = bake_appearance(textured, appearance, size, seed=inputs.seed or 0)
        progress(0.92, "writing the textured GLB")
        material = trimesh.visual.material.PBRMaterial(
            baseColorTexture=texture, baseColorFactor=[255, 255, 255, 255],
            metallicFactor=appearance.metallic, roughnessFactor=appearance.roughness)
        out_mesh = trimesh.Trimesh(textured.vertices, textured.faces, process=False,
                                   visual=trimesh.visual.TextureVisuals(uv=textured.visual.uv, material=material))
        out = inputs.work_dir / "textured.glb"
        out_mesh.export(out)
        return {"mesh": out}


def _check_inputs(inputs: RunInputs, params: TextureParams, text: str) -> None:
    if inputs.mesh is None:
        raise InputRejected("texturing needs a mesh")
    _check_counts(len(inputs.images), text, params)


def _check_counts(count: int, text: str | None, params: TextureParams) -> None:
    if count == 0 and not text:
        raise InputRejected("texturing needs reference images (1 to 4) or a text prompt")
    if count > MAX_VIEWS:
        raise InputRejected(f"at most {MAX_VIEWS} reference images are used, {count} were given")
    for name, values in (("azimuths", params.azimuths), ("elevations", params.elevations)):
        if values is not None and len(values) != count:
            raise InputRejected(f"{len(values)} {name} were given for {count} image(s): give one per image")


def _load_mesh(path: Path) -> tuple[trimesh.Trimesh, str]:
    """One mesh in world coordinates; a single mesh keeps its UVs, several are merged without them."""
    fmt = path.suffix.lstrip(".").lower()
    mesh = one_mesh(load_scene(path, fmt), colors=False)
    if len(mesh.faces) == 0 or mesh.area <= 0:
        raise InputRejected("the mesh has no faces with any area to put a texture on")
    return mesh, fmt


def _load_views(inputs: RunInputs, params: TextureParams) -> list[View]:
    paths = inputs.images
    azimuths = view_azimuths(inputs, params.azimuths)
    elevations = params.elevations or [0.0] * len(paths)
    views = []
    for number, (path, azimuth, elevation) in enumerate(zip(paths, azimuths, elevations, strict=True), 1):
        views.append(View(cut_out(read_image(path, f"reference image {number}")), azimuth, elevation))
    return views


def _describe(appearance: Appearance) -> str:
    colours = len(appearance.colours)
    material = appearance.material or "no material"
    return f"{colours} colour{'s' if colours != 1 else ''}, {material}" if colours else f"no colour, {material}"
